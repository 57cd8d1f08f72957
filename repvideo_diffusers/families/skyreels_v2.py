"""SkyReels-V2 (text-to-video, image-to-video and diffusion-forcing checkpoints): `SkyReelsV2Transformer3DModel`.

Gated: ``blocks`` in order (``SkyReelsV2TransformerBlock``). Blended: the video stream only. Text, and the CLIP
image tokens of the image-to-video checkpoints (prepended to the text), enter every block unchanged through
cross-attention: conditions, not streams. The diffusion-forcing checkpoints change only what the blocks are given
(a per-frame timestep modulation and, with ``num_frame_per_block > 1``, a block-causal self-attention mask), not
which stream flows from block to block, so the same facts cover them. The transformer is not a subclass of
`WanTransformer3DModel` (its own block and attention classes), so it never matches the Wan family.
"""

from __future__ import annotations

from . import _wan_like
from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, TrainingFacts, register_family


SKYREELS_V2 = register_family(Family(
    name="SkyReels-V2",
    transformers=("SkyReelsV2Transformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("SkyReelsV2AttnProcessor",)),
    training=TrainingFacts(
        default_size=lambda pipe: (544, 960, 97),  # SkyReelsV2Pipeline.__call__ defaults
        encode_video=_wan_like.encode_video, encode_prompt=_wan_like.encode_prompt,
        max_sequence_length=lambda pipe: 512,
        forward_kwargs=_wan_like.forward_kwargs,
    ),
    tiny=TinyModel("SkyReels-V2", _wan_like.tiny_transformer("SkyReelsV2Transformer3DModel"),
                   _wan_like.tiny_inputs, 4),
    notes="video (text and CLIP image tokens are cross-attention conditions)",
))

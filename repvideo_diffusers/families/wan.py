"""Wan 2.1 / 2.2: `WanTransformer3DModel`.

Gated: ``blocks`` in order. Blended: the video stream only; text enters every block unchanged through
cross-attention, so it is a condition, not a stream. Wan 2.2 A14B pipelines carry a second transformer
(``transformer_2``) of the same class.
"""

from __future__ import annotations

from . import _wan_like
from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, TrainingFacts, register_family


WAN = register_family(Family(
    name="Wan",
    transformers=("WanTransformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("WanAttnProcessor", "WanAttnProcessor2_0")),
    training=TrainingFacts(
        default_size=lambda pipe: (480, 832, 81),  # WanPipeline.__call__ defaults
        encode_video=_wan_like.encode_video, encode_prompt=_wan_like.encode_prompt,
        max_sequence_length=lambda pipe: 512,
        forward_kwargs=_wan_like.forward_kwargs,
    ),
    tiny=TinyModel("Wan", _wan_like.tiny_transformer("WanTransformer3DModel"), _wan_like.tiny_inputs, 4),
    notes="video (text is a cross-attention condition)",
))

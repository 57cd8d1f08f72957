"""ChronoEdit (image editing as a short video generation): `ChronoEditTransformer3DModel`.

Gated: ``blocks`` in order (its own copy of the Wan block). Blended: the video stream only; text and the CLIP
image tokens of the input image enter every block unchanged through cross-attention, and the input image's latents
enter as extra input channels: conditions, not streams. The transformer is not a subclass of
`WanTransformer3DModel`, so it never matches the Wan family.
"""

from __future__ import annotations

from . import _wan_like
from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family


CHRONOEDIT = register_family(Family(
    name="ChronoEdit",
    transformers=("ChronoEditTransformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("WanAttnProcessor", "WanAttnProcessor2_0")),
    tiny=TinyModel("ChronoEdit", _wan_like.tiny_transformer("ChronoEditTransformer3DModel"), _wan_like.tiny_inputs, 4),
    notes="video (text and CLIP image tokens are cross-attention conditions; the input image enters as channels)",
))

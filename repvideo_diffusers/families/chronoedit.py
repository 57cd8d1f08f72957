"""ChronoEdit (image editing as a short video generation): `ChronoEditTransformer3DModel`.

Gated: ``blocks`` in order (its own copy of the Wan block). Blended: the video stream only; text and the CLIP
image tokens of the input image enter every block unchanged through cross-attention, and the input image's latents
enter as extra input channels: conditions, not streams. The transformer is not a subclass of
`WanTransformer3DModel`, so it never matches the Wan family.
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family


def _tiny_transformer():
    from diffusers import ChronoEditTransformer3DModel

    return ChronoEditTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, rope_max_seq_len=32,
    )


def _tiny_inputs(g, b):
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.tensor([500] * b),
    }


CHRONOEDIT = register_family(Family(
    name="ChronoEdit",
    transformers=("ChronoEditTransformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("WanAttnProcessor", "WanAttnProcessor2_0")),
    tiny=TinyModel("ChronoEdit", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text and CLIP image tokens are cross-attention conditions; the input image enters as channels)",
))

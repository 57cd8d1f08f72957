"""Wan VACE (all-in-one video creation and editing, Wan 2.1 and 2.2): `WanVACETransformer3DModel`.

Gated: ``blocks`` in order (the main Wan blocks the video stream flows through). Not gated: ``vace_blocks``, an
auxiliary branch that runs on the control video (reference images, masks, source video) *before* the main loop
and produces one hint per entry of ``config.vace_layers``; the model adds hint ``k`` to the video stream right after
main block ``vace_layers[k]``. The hints are a condition, like the cross-attention text: they are neither gated nor
blended. The feature cache holds what each main block returns (before its hint is added), exactly what the block
hooks see; the stream entering the next block (block output + hint) is the one blended with the cache mean.
Blended: the video stream only. The transformer is not a subclass of `WanTransformer3DModel`, so it never matches
the Wan family.
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family


def _tiny_transformer():
    from diffusers import WanVACETransformer3DModel

    return WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, rope_max_seq_len=32, vace_layers=[0, 2],
        vace_in_channels=6,
    )


def _tiny_inputs(g, b):
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.tensor([500] * b),
        "control_hidden_states": torch.randn(b, 6, 3, 8, 8, generator=g),
    }


WAN_VACE = register_family(Family(
    name="Wan-VACE",
    transformers=("WanVACETransformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    # The VACE blocks use the same stock processor; they are routed too, but only the main blocks are captured.
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("WanAttnProcessor", "WanAttnProcessor2_0")),
    tiny=TinyModel("Wan-VACE", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text is a cross-attention condition; the VACE hints of `vace_blocks` are added conditions)",
))

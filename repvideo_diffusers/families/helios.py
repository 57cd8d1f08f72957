"""Helios (chunk-wise long-video model with multi-term memory): `HeliosTransformer3DModel`.

Gated: ``blocks`` in order. Blended: the video stream, which here is one token sequence holding the history context
(long, mid and short history latents, patched by ``patch_long`` / ``patch_mid`` / ``patch_short``) followed by the
tokens of the chunk being generated. The history tokens are not a condition that enters every block unchanged: every
block's self-attention and feed-forward update them (modulated with the zero "history" timestep) and pass them on,
so they flow from block to block with the chunk in one tensor, in one fixed layout, and are blended with it. Text
enters every block unchanged through cross-attention (to the chunk's tokens only): a condition.

`HeliosPipeline` and `HeliosPyramidPipeline` drive it (text-to-video; image- and video-to-video through their
``image`` / ``video`` arguments), always with the three history inputs.

Attention: self-attention (``attn1``) and cross-attention use `HeliosAttnProcessor`, which calls
``dispatch_attention_fn`` (PyTorch SDPA under the default backend). In ``attn1``'s key sequence the history tokens
come first and the chunk's video tokens last, which is what ``text_first=True`` tells capture (the frame queries are
taken from the last ``t * h * w`` tokens); the grid is the chunk's. Training facts are not declared: the pipelines'
`HeliosScheduler` / `HeliosDMDScheduler` have no objective in `repvideo train`, and a clip would need the history
context that `TrainingFacts` cannot state.
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family


def _tiny_transformer():
    from diffusers import HeliosTransformer3DModel

    return HeliosTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, rope_dim=(4, 2, 2),
    )


def _tiny_inputs(g, b):
    # The pipelines' call: the chunk (3 latent frames of 8x8 -> 48 tokens) after 1 long (4 frames, 4x compressed),
    # 4 mid (2 frames, 2x compressed) and 32 short (2 frames) history tokens: 37 + 48 tokens in one sequence.
    def indices(start, count):
        return torch.arange(start, start + count).unsqueeze(0).expand(b, -1)

    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "timestep": torch.tensor([500] * b),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "indices_hidden_states": indices(8, 3),
        "indices_latents_history_short": indices(6, 2),
        "indices_latents_history_mid": indices(4, 2),
        "indices_latents_history_long": indices(0, 4),
        "latents_history_short": torch.randn(b, 4, 2, 8, 8, generator=g),
        "latents_history_mid": torch.randn(b, 4, 2, 8, 8, generator=g),
        "latents_history_long": torch.randn(b, 4, 4, 8, 8, generator=g),
    }


HELIOS = register_family(Family(
    name="Helios",
    transformers=("HeliosTransformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=True, grid=channels_first_grid,
                             processors=("HeliosAttnProcessor",)),
    tiny=TinyModel("Helios", _tiny_transformer, _tiny_inputs, 4),
    notes="video: history context + current chunk as one sequence (text is a cross-attention condition)",
))

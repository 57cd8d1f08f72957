"""AnyFlow (bidirectional flow-map model on the Wan 2.1 backbone): `AnyFlowTransformer3DModel`.

Gated: ``blocks`` in order. Blended: the video stream only. Text (and, for image conditioning, the CLIP image tokens
put in front of it) enters every block unchanged through cross-attention, so it is a condition, not a stream. The
transformer takes two timesteps per latent frame (the source ``t`` and the target ``r`` of a flow-map step); both only
modulate the blocks, so they change nothing about what is blended.

`AnyFlowPipeline` (text-to-video, and video-to-video / image-to-video through its ``video`` argument) drives it. The
autoregressive FAR variant is the separate family of `AnyFlowFARTransformer3DModel` (``anyflow_far.py``).

Attention: self-attention (``attn1``, video tokens only, with rotary positions) and cross-attention both call
``dispatch_attention_fn``, PyTorch SDPA under the default backend. Training facts are not declared: the pipeline's
`FlowMapEulerDiscreteScheduler` has no objective in `repvideo train`, and a flow map's target (the mean velocity from
``t`` to ``r``) is not the instantaneous flow-matching target that objective computes.
"""

from __future__ import annotations

import torch

from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family


def _grid(transformer, args, kwargs):
    """(t, h, w) of a ``(B, F, C, H, W)`` latent input (frames before channels) patched by ``config.patch_size``."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    frames, _, height, width = hidden.shape[1:]
    pt, ph, pw = transformer.config.patch_size
    return frames // pt, height // ph, width // pw


def _tiny_transformer():
    from diffusers import AnyFlowTransformer3DModel

    return AnyFlowTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, rope_max_seq_len=32,
    )


def _tiny_inputs(g, b):
    frames = 3
    return {
        "hidden_states": torch.randn(b, frames, 4, 8, 8, generator=g),  # (B, F, C, H, W)
        "timestep": torch.full((b, frames), 600.0),  # one source timestep per latent frame
        "r_timestep": torch.full((b, frames), 300.0),  # and one target timestep
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
    }


ANYFLOW = register_family(Family(
    name="AnyFlow",
    transformers=("AnyFlowTransformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=_grid,
                             processors=("AnyFlowAttnProcessor", "AnyFlowCrossAttnProcessor")),
    tiny=TinyModel("AnyFlow", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text is a cross-attention condition)",
))

"""Latte: `LatteTransformer3DModel`.

Latte alternates a spatial block (`transformer_blocks[i]`: the tokens of one frame attend to each other, frames
in the batch dimension, ``(batch * frames, tokens, width)``) and a temporal block (`temporal_transformer_blocks[i]`:
the frames of one spatial position attend to each other, ``(batch * tokens, frames, width)``). Gated: both, in
that interleaved execution order (spatial 0, temporal 0, spatial 1, ...). Blended: the video stream; text enters
the spatial blocks through cross-attention, a condition. The feature cache holds every block's output in one
canonical layout, ``(batch, frames * tokens, width)`` frame-major, so it averages the same tokens whichever block
produced them, and each block gets the blend back in its own layout: the same maths as for every other family.

With ``enable_temporal_attentions=False`` the temporal blocks do not run; their gates then go unused and the cache
windows keep the block numbering of the full model. No attention facts: capture records one key sequence per block,
and Latte's alternates between per-frame and per-position sequences.
"""

from __future__ import annotations

import torch

from ._registry import BlockList, Family, TinyModel, register_family


def _context(transformer, args, kwargs) -> dict:
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    batch, _, frames, height, width = hidden.shape  # (B, C, F, H, W)
    patch = transformer.config.patch_size
    return {"batch": batch, "frames": frames, "tokens": (height // patch) * (width // patch)}


def _spatial_to_canonical(stream, c):  # (B * F, N, D) -> (B, F * N, D)
    return stream.reshape(c["batch"], c["frames"] * c["tokens"], stream.shape[-1])


def _spatial_from_canonical(stream, c):
    return stream.reshape(c["batch"] * c["frames"], c["tokens"], stream.shape[-1])


def _temporal_to_canonical(stream, c):  # (B * N, F, D) -> (B, N, F, D) -> (B, F, N, D) -> (B, F * N, D)
    width = stream.shape[-1]
    return stream.reshape(c["batch"], c["tokens"], c["frames"], width).transpose(1, 2).reshape(c["batch"], -1, width)


def _temporal_from_canonical(stream, c):
    width = stream.shape[-1]
    return (stream.reshape(c["batch"], c["frames"], c["tokens"], width).transpose(1, 2)
            .reshape(c["batch"] * c["tokens"], c["frames"], width))


SPATIAL = BlockList("transformer_blocks", ("hidden_states",), to_canonical=_spatial_to_canonical,
                    from_canonical=_spatial_from_canonical)
TEMPORAL = BlockList("temporal_transformer_blocks", ("hidden_states",), to_canonical=_temporal_to_canonical,
                     from_canonical=_temporal_from_canonical)


def _interleaved(transformer):
    order = []
    for spatial, temporal in zip(transformer.transformer_blocks, transformer.temporal_transformer_blocks):
        order += [(SPATIAL, spatial), (TEMPORAL, temporal)]
    return order


def _tiny_transformer():
    from diffusers import LatteTransformer3DModel

    return LatteTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=16, sample_size=8, patch_size=2, activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000, norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
        caption_channels=16, video_length=3,
    )


def _tiny_inputs(g, b):
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),  # (B, C, F, H, W): 3 frames of 4 x 4 tokens
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.tensor([500] * b),
    }


LATTE = register_family(Family(
    name="Latte",
    transformers=("LatteTransformer3DModel",),
    blocks=(SPATIAL, TEMPORAL),
    execution_order=_interleaved,
    forward_context=_context,
    tiny=TinyModel("Latte", _tiny_transformer, _tiny_inputs, 4),
    notes="video, cached in one frame-major layout across spatial and temporal blocks (text is a cross-attention "
          "condition)",
))

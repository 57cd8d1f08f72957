"""Kandinsky 6 video super-resolution: `Kandinsky6SRTransformer3DModel`.

A text-free video DiT that refines tiles of a K-VAE latent video (`Kandinsky6SRPipeline`, video to video): its input
is the noisy latent with the low-resolution anchor latent and its mask as extra channels.

Gated: ``visual_transformer_blocks`` in order (`Kandinsky6SRTransformerBlock`: self-attention + feed-forward).
Blended: the video stream (``hidden_states``), the only stream there is. The model flattens the token grid once,
before the loop, in NABLA's order (frame-major, 8 x 8 spatial tiles within a frame), the same order in every block.

No attention facts: the self-attention always runs PyTorch's flex attention with a NABLA block-sparse mask (diffusers'
``flex`` backend), never ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch

from ._registry import BlockList, Family, TinyModel, register_family


def _tiny_transformer():
    from diffusers import Kandinsky6SRTransformer3DModel

    # 8 x 8 tokens per frame: NABLA needs the token grid in whole 8 x 8 tiles.
    return Kandinsky6SRTransformer3DModel(
        in_visual_dim=4, out_visual_dim=4, time_dim=16, patch_size=(1, 1, 1), model_dim=16, ff_dim=32,
        num_visual_blocks=4, axes_dims=(4, 2, 2), nabla_window=(3, 3, 3),
    )


def _tiny_inputs(g, b):
    # 3 latent frames of 8 x 8: the noisy latent (4), the anchor latent (4) and the anchor mask (1) as channels
    return {"hidden_states": torch.randn(b, 3, 8, 8, 9, generator=g), "timestep": torch.tensor([500.0] * b)}


KANDINSKY6_SR = register_family(Family(
    name="Kandinsky6-SR",
    transformers=("Kandinsky6SRTransformer3DModel",),
    blocks=(BlockList("visual_transformer_blocks", ("hidden_states",)),),
    tiny=TinyModel("Kandinsky6-SR", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text-free super-resolution; the low-resolution anchor enters as input channels)",
))

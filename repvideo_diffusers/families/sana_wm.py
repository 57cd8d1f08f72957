"""SANA-WM (camera-controlled world model, stage 1): `SanaWMTransformer3DModel`.

A video DiT over ``(B, C, T, H, W)`` latents with per-frame timesteps (`SanaWMPipeline`: first frame + prompt + camera
trajectory to video). Gated: ``blocks`` in order (`SanaVideoMSCamCtrlBlock`; every ``softmax_every_n``-th block uses
softmax attention, the others a bidirectional gated-delta-net linear attention). Blended: the video stream only (the
block's ``x``). The text enters every block unchanged through cross-attention, and so do the camera conditions (ray
matrices, Plücker embedding): conditions, not streams.

No attention facts: most blocks attend through a linear-attention recurrence (no softmax map), and the softmax blocks
call ``scaled_dot_product_attention`` from a module without a diffusers attention processor. (They cast q, k and v to
bfloat16 first, even in a float32 model, so float32 rounding differences reach the output at bfloat16 scale.)
"""

from __future__ import annotations

import numpy as np
import torch

from ._registry import BlockList, Family, TinyModel, register_family

# The tiny configuration's VAE strides (temporal, spatial): the camera tensors are built for them.
_TINY_STRIDES = (4, 8)


def _tiny_transformer(temporal_stride: int = _TINY_STRIDES[0], num_layers: int = 4, softmax_every_n: int = 2):
    """A tiny model (hidden 32, 2 heads) whose Plücker input matches a VAE of that temporal stride; every
    ``softmax_every_n``-th block uses softmax attention (0: none)."""
    from diffusers import SanaWMTransformer3DModel

    transformer = SanaWMTransformer3DModel(
        in_channels=4, num_layers=num_layers, hidden_size=32, num_attention_heads=2, softmax_every_n=softmax_every_n,
        linear_head_dim=16, caption_channels=16, chunk_plucker_channels=6 * temporal_stride,
        chunk_plucker_post_attn_blocks=num_layers, mlp_ratio=2.0, image_size=64,
    )
    # The Plücker embedding is zero-initialised (a fresh model ignores the camera rays): give it weights.
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in transformer.plucker_embedder.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return transformer


def _tiny_inputs(g, b):
    from diffusers.pipelines.sana_wm.cam_utils import action_string_to_c2w, prepare_camera

    # A forward-walking camera over 9 frames (3 latent frames of 8 x 8 at strides 4 and 8), pinhole intrinsics.
    temporal, spatial = _TINY_STRIDES
    poses = action_string_to_c2w("w-8")[:9]
    camera = prepare_camera(poses, np.full((9, 4), 32.0, dtype=np.float32), target_size=(64, 64),
                            vae_stride=(temporal, spatial, spatial))
    mask = torch.ones(b, 12)
    mask[0, 9:] = 0  # padded text
    frame_timesteps = torch.tensor([0.0, 500.0, 500.0])  # the first (image) frame is clean, as in the pipeline
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "timestep": frame_timesteps.expand(b, 1, 3).clone(),
        "encoder_hidden_states": torch.randn(b, 1, 12, 16, generator=g),
        "encoder_attention_mask": mask,
        "camera_conditions": camera["raymap"].expand(b, -1, -1).clone(),
        "chunk_plucker": camera["chunk_plucker"].expand(b, -1, -1, -1, -1).clone(),
    }


SANA_WM = register_family(Family(
    name="SANA-WM",
    transformers=("SanaWMTransformer3DModel",),
    blocks=(BlockList("blocks", ("x",)),),
    tiny=TinyModel("SANA-WM", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text and camera rays are conditions of every block)",
))

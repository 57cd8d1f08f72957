"""Wan 2.2 Animate (character animation and replacement): `WanAnimateTransformer3DModel`.

Gated: ``blocks`` in order (Wan blocks). Blended: the video stream only. Not gated, not blended: the motion encoder
and face encoder, which turn the face video into motion vectors once per forward call, and the ``face_adapter``
cross-attentions, whose output the model adds to the video stream after every ``inject_face_latents_blocks``-th
block: conditions, like the cross-attention text and the CLIP image tokens. The pose latents are added to the
patch embedding before the first block. The feature cache holds what each block returns (before a face adapter
adds to it); the stream entering the next block is the one blended. The transformer is not a subclass of
`WanTransformer3DModel` (its classes are copies), so it never matches the Wan family.
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family


def _tiny_transformer():
    from diffusers import WanAnimateTransformer3DModel

    return WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=12, latent_channels=4,
        out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, image_dim=None, rope_max_seq_len=32,
        motion_encoder_channel_sizes={"4": 8, "8": 8}, motion_encoder_size=8, motion_style_dim=8, motion_dim=4,
        motion_encoder_dim=8, face_encoder_hidden_dim=8, face_encoder_num_heads=2, inject_face_latents_blocks=2,
    )


def _tiny_inputs(g, b):
    # 3 latent frames: the reference frame and 2 generated ones; the face video's 5 frames shrink to the 2 motion
    # frames the face encoder gives (plus one zero frame for the reference), one per latent frame.
    return {
        "hidden_states": torch.randn(b, 12, 3, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.tensor([500] * b),
        "pose_hidden_states": torch.randn(b, 4, 2, 8, 8, generator=g),
        "face_pixel_values": torch.rand(b, 3, 5, 8, 8, generator=g) * 2 - 1,
    }


WAN_ANIMATE = register_family(Family(
    name="Wan-Animate",
    transformers=("WanAnimateTransformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    # Both processors call diffusers' dispatch_attention_fn (native backend: SDPA); the face adapter's is routed too.
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("WanAttnProcessor", "WanAnimateFaceBlockAttnProcessor")),
    tiny=TinyModel("Wan-Animate", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text and CLIP image are cross-attention conditions; pose, face adapters and motion are added "
          "conditions)",
))

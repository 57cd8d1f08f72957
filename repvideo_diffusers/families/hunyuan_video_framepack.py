"""HunyuanVideo FramePack: `HunyuanVideoFramepackTransformer3DModel`.

Not a subclass of `HunyuanVideoTransformer3DModel` (it reuses HunyuanVideo's block classes only), so it is a family of
its own with HunyuanVideo's layout. Gated: the double-stream ``transformer_blocks`` then the single-stream
``single_transformer_blocks``, one sequence with one feature cache across both lists. Blended: video and text (both
lists take and return both streams). The video stream is the packed FramePack sequence (the 4x / 2x / 1x history
tokens prepended to the noisy section's tokens): all of it flows from block to block, so all of it is blended; the
text stream is the SigLIP image tokens followed by the refined Llama tokens. Not gated: the token refiner's blocks
(``context_embedder``), which run on the text alone before the main loop.

No attention facts: capture picks one query token per latent frame of the noisy section at ``frame * h * w`` from
the start of the video tokens, but here the history tokens come first, so it would record history tokens. Capture
needs the offset of the noisy section's tokens in the video stream, which `AttentionFacts` cannot state today.
"""

from __future__ import annotations

import torch

from ._registry import BlockList, Family, TinyModel, register_family

_JOINT = ("hidden_states", "encoder_hidden_states")


def _tiny_transformer():
    from diffusers import HunyuanVideoFramepackTransformer3DModel

    return HunyuanVideoFramepackTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_single_layers=3, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 2), has_image_proj=True, image_proj_dim=16,
        has_clean_x_embedder=True,
    )


def _tiny_inputs(g, b):
    mask = torch.ones(b, 12, dtype=torch.bool)
    mask[0, 9:] = False  # padded text: the attention mask must be respected with and without RepVideo
    # The pipeline's index layout: [prefix, 4x history, 2x history, 1x history, noisy section] along the time axis.
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "timestep": torch.tensor([500] * b),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "encoder_attention_mask": mask,
        "pooled_projections": torch.randn(b, 8, generator=g),
        "image_embeds": torch.randn(b, 3, 16, generator=g),
        "indices_latents": torch.arange(8, 11),
        "guidance": torch.tensor([6000.0] * b),
        "latents_clean": torch.randn(b, 4, 2, 8, 8, generator=g),
        "indices_latents_clean": torch.tensor([0, 7]),
        "latents_history_2x": torch.randn(b, 4, 2, 8, 8, generator=g),
        "indices_latents_history_2x": torch.tensor([5, 6]),
        "latents_history_4x": torch.randn(b, 4, 4, 8, 8, generator=g),
        "indices_latents_history_4x": torch.tensor([1, 2, 3, 4]),
    }


HUNYUAN_VIDEO_FRAMEPACK = register_family(Family(
    name="HunyuanVideo-FramePack",
    transformers=("HunyuanVideoFramepackTransformer3DModel",),
    blocks=(
        BlockList("transformer_blocks", _JOINT, outputs=(0, 1)),
        BlockList("single_transformer_blocks", _JOINT, outputs=(0, 1)),
    ),
    tiny=TinyModel("HunyuanVideo-FramePack", _tiny_transformer, _tiny_inputs, 5),
    notes="video (history + noisy section tokens) + text; double- then single-stream blocks as one sequence",
))

"""Mochi: `MochiTransformer3DModel`.

Gated: ``transformer_blocks`` in order. Blended: video and text (joint attention; the stock processor attends sample
by sample, dropping padded text tokens).
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, TrainingFacts, register_family
from ._text import masked_encode_prompt


def _encode_video(pipe, video, generator):
    vae = pipe.vae
    latents = vae.encode(video.to(vae.dtype)).latent_dist.sample(generator=generator)
    # The inverse of MochiPipeline's decode normalisation (which falls back to the scaling factor alone).
    if getattr(vae.config, "latents_mean", None) is not None and getattr(vae.config, "latents_std", None) is not None:
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
        return ((latents - mean) * vae.config.scaling_factor / std)[0]
    return (latents * vae.config.scaling_factor)[0]


def _forward_kwargs(pipe, noisy, batch, timestep):
    return {"hidden_states": noisy, "encoder_hidden_states": batch["prompt_embeds"], "timestep": timestep,
            "encoder_attention_mask": batch["prompt_attention_mask"], "return_dict": False}


def _tiny_transformer():
    from diffusers import MochiTransformer3DModel

    return MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=4, pooled_projection_dim=16,
        in_channels=4, text_embed_dim=16, time_embed_dim=4, max_sequence_length=16,
    )


def _tiny_inputs(g, b):
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.tensor([500] * b),
        "encoder_attention_mask": torch.ones(b, 12, dtype=torch.bool),
    }


MOCHI = register_family(Family(
    name="Mochi",
    transformers=("MochiTransformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states", "encoder_hidden_states"), outputs=(0, 1)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("MochiAttnProcessor2_0",), drops_padding=True),
    training=TrainingFacts(
        default_size=lambda pipe: (pipe.default_height, pipe.default_width, 19),  # MochiPipeline.__call__ defaults
        encode_video=_encode_video, encode_prompt=masked_encode_prompt, max_sequence_length=lambda pipe: 256,
        forward_kwargs=_forward_kwargs,
        size_multiples=lambda pipe: (pipe.vae_temporal_scale_factor,
                                     pipe.vae_spatial_scale_factor * pipe.transformer.config.patch_size),
    ),
    tiny=TinyModel("Mochi", _tiny_transformer, _tiny_inputs, 4),
    notes="video + text (joint attention)",
))

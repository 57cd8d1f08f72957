"""LTX-Video: `LTXVideoTransformer3DModel`.

Gated: ``transformer_blocks`` in order. Blended: the video stream only (text is a cross-attention condition). The
transformer takes packed latent tokens plus the grid they came from.
"""

from __future__ import annotations

import torch

from ._registry import AttentionFacts, BlockList, Family, TinyModel, TrainingFacts, register_family
from ._text import masked_encode_prompt

# LTXPipeline.__call__'s default frame_rate: the rotary temporal scale inference will use with these gates.
FRAME_RATE = 25


def _grid(transformer, args, kwargs):
    config = transformer.config
    return (
        kwargs["num_frames"] // (config.patch_size_t or 1),
        kwargs["height"] // config.patch_size,
        kwargs["width"] // config.patch_size,
    )


def _encode_video(pipe, video, generator):
    from .._compat import ltx_normalize_latents, ltx_pack_latents

    vae = pipe.vae
    latents = vae.encode(video.to(vae.dtype)).latent_dist.sample(generator=generator)
    # The pipeline's own normalisation and packing, so training sees exactly what its denoising loop sees.
    latents = ltx_normalize_latents(pipe, latents, vae)
    _, _, frames, height, width = latents.shape
    packed = ltx_pack_latents(pipe, latents)
    # Packing forgets the grid; the transformer's rotary positions need it back, in latent units.
    return {"latents": packed[0], "latent_size": torch.tensor([frames, height, width])}


def _forward_kwargs(pipe, noisy, batch, timestep):
    # One run trains at one size, so every clip of the batch has the same latent grid.
    frames, height, width = (int(v) for v in batch["latent_size"][0])
    spatial = pipe.vae_spatial_compression_ratio
    return {"hidden_states": noisy, "encoder_hidden_states": batch["prompt_embeds"], "timestep": timestep,
            "encoder_attention_mask": batch["prompt_attention_mask"], "num_frames": frames, "height": height,
            "width": width,
            "rope_interpolation_scale": (pipe.vae_temporal_compression_ratio / FRAME_RATE, spatial, spatial),
            "return_dict": False}


def _tiny_transformer():
    from diffusers import LTXVideoTransformer3DModel

    return LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=4, caption_channels=16,
    )


def _tiny_inputs(g, b):
    frames, height, width = 3, 4, 4
    return {
        "hidden_states": torch.randn(b, frames * height * width, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.tensor([500] * b),
        "encoder_attention_mask": torch.ones(b, 12),
        "num_frames": frames,
        "height": height,
        "width": width,
    }


LTX_VIDEO = register_family(Family(
    name="LTX-Video",
    transformers=("LTXVideoTransformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=_grid, processors=("LTXVideoAttnProcessor",)),
    training=TrainingFacts(
        default_size=lambda pipe: (512, 704, 161),  # LTXPipeline.__call__ defaults
        encode_video=_encode_video, encode_prompt=masked_encode_prompt, max_sequence_length=lambda pipe: 128,
        forward_kwargs=_forward_kwargs,
        size_multiples=lambda pipe: (pipe.vae_temporal_compression_ratio * pipe.transformer_temporal_patch_size,
                                     pipe.vae_spatial_compression_ratio * pipe.transformer_spatial_patch_size),
    ),
    tiny=TinyModel("LTX-Video", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text is a cross-attention condition)",
))

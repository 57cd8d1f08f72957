"""HunyuanVideo: `HunyuanVideoTransformer3DModel`.

Gated: the double-stream ``transformer_blocks`` then the single-stream ``single_transformer_blocks``, one sequence
with one feature cache across both lists. Blended: video and text (both lists take and return both streams).
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, TrainingFacts, register_family

_JOINT = ("hidden_states", "encoder_hidden_states")


def _encode_video(pipe, video, generator):
    latents = pipe.vae.encode(video.to(pipe.vae.dtype)).latent_dist.sample(generator=generator)
    return (latents * pipe.vae.config.scaling_factor)[0]  # the inverse of the pipeline's `/ scaling_factor`


def _encode_prompt(pipe, text, max_sequence_length):
    # The pipeline's default prompt template and crop_start: inference (and validation) encode the same way.
    embeds, pooled, mask = pipe.encode_prompt(text, device=torch.device("cpu"), max_sequence_length=max_sequence_length)
    if not mask.any():
        # An all-padding mask leaves the attention nothing to attend to: NaN losses from the first step.
        raise ValueError(
            f"The Llama tokenizer left nothing of the caption {text!r} after the prompt template's first "
            f"crop_start tokens (the pipeline crops them): expected at least one caption token, found an all-padding "
            f"mask of {mask.shape[-1]}. Use the tokenizer the pipeline was released with (its template prefix is "
            f"exactly crop_start tokens long)."
        )
    return {"prompt_embeds": embeds[0], "pooled_prompt_embeds": pooled[0], "prompt_attention_mask": mask[0]}


# HunyuanVideo is guidance-distilled: the guidance scale is an input of the transformer, not classifier-free
# guidance. Training uses HunyuanVideoPipeline.__call__'s default (6.0), which inference then uses by default too.
GUIDANCE_SCALE = 6.0


def _forward_kwargs(pipe, noisy, batch, timestep):
    # The pipeline passes guidance_scale * 1000, as the guidance embedding was trained.
    guidance = torch.full((noisy.shape[0],), GUIDANCE_SCALE * 1000.0, device=noisy.device, dtype=noisy.dtype)
    return {"hidden_states": noisy, "timestep": timestep, "encoder_hidden_states": batch["prompt_embeds"],
            "encoder_attention_mask": batch["prompt_attention_mask"],
            "pooled_projections": batch["pooled_prompt_embeds"], "guidance": guidance, "return_dict": False}


def _tiny_transformer():
    from diffusers import HunyuanVideoTransformer3DModel

    return HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_single_layers=3, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 2),
    )


def _tiny_inputs(g, b):
    mask = torch.ones(b, 12, dtype=torch.bool)
    mask[0, 9:] = False  # padded text: the attention mask must be respected with and without RepVideo
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "timestep": torch.tensor([500] * b),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "encoder_attention_mask": mask,
        "pooled_projections": torch.randn(b, 8, generator=g),
        "guidance": torch.tensor([3500.0] * b),
    }


HUNYUAN_VIDEO = register_family(Family(
    name="HunyuanVideo",
    transformers=("HunyuanVideoTransformer3DModel",),
    blocks=(
        BlockList("transformer_blocks", _JOINT, outputs=(0, 1)),
        BlockList("single_transformer_blocks", _JOINT, outputs=(0, 1)),
    ),
    attention=AttentionFacts(
        captured="attn", text_first=False, grid=channels_first_grid,
        processors=("HunyuanVideoAttnProcessor2_0", "AttnProcessor2_0"),  # AttnProcessor2_0: the token refiner
    ),
    training=TrainingFacts(
        default_size=lambda pipe: (720, 1280, 129),  # HunyuanVideoPipeline.__call__ defaults
        encode_video=_encode_video, encode_prompt=_encode_prompt, max_sequence_length=lambda pipe: 256,
        forward_kwargs=_forward_kwargs,
        # Frames 1 + 4k (released patch_size_t is 1); height and width: VAE x patch, which is the pipeline's 16.
        size_multiples=lambda pipe: (pipe.vae_scale_factor_temporal,
                                     pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size),
    ),
    tiny=TinyModel("HunyuanVideo", _tiny_transformer, _tiny_inputs, 5),
    notes="video + text; double- then single-stream blocks as one sequence",
))

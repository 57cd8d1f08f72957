"""HunyuanVideo 1.5: `HunyuanVideo15Transformer3DModel` (text-to-video and image-to-video checkpoints).

Gated: the dual-stream ``transformer_blocks`` in order, the only block list the video stream flows through.
Blended: video and the joint text stream (each block takes and returns both). The text stream is one sequence built
before the loop: the SigLIP image tokens, the ByT5 glyph tokens and the Qwen2.5-VL tokens, valid tokens first; it
flows from block to block as the second stream of the joint attention, so it is blended like the video.
Not gated: the token refiner's ``refiner_blocks`` (``context_embedder.token_refiner``), which refine the Qwen tokens
alone before the main loop and produce the text stream's starting point, not a stream of the main loop.

Training (``repvideo train``) feeds the transformer as `HunyuanVideo15Pipeline` does for text-to-video. The
pipeline's ``__call__`` takes no ``max_sequence_length`` (its token budgets are attributes), so validation videos
during training need the trainer to pass that argument only to pipelines that take it.
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, TrainingFacts, register_family

_JOINT = ("hidden_states", "encoder_hidden_states")


def _default_size(pipe):
    # HunyuanVideo15Pipeline.__call__ without height and width: its default aspect ratio at the model's target size.
    aspect_width, aspect_height = pipe.default_aspect_ratio
    height, width = pipe.video_processor.calculate_default_height_width(aspect_height, aspect_width,
                                                                        pipe.target_size)
    return int(height), int(width), 121


def _encode_video(pipe, video, generator):
    latents = pipe.vae.encode(video.to(pipe.vae.dtype)).latent_dist.sample(generator=generator)
    return (latents * pipe.vae.config.scaling_factor)[0]  # the inverse of the pipeline's `/ scaling_factor`


def _encode_prompt(pipe, text, max_sequence_length):
    # The pipeline's own encoding (chat template, crop of the system part, ByT5 for quoted glyph text) with its Qwen
    # token budget set to `max_sequence_length`: the budget is an attribute of the pipeline, not an argument, and
    # padding beyond the caption is dropped by the transformer anyway.
    budget = pipe.tokenizer_max_length
    pipe.tokenizer_max_length = max_sequence_length
    try:
        embeds, mask, embeds_2, mask_2 = pipe.encode_prompt(text, device=torch.device("cpu"))
    finally:
        pipe.tokenizer_max_length = budget
    return {"prompt_embeds": embeds[0], "prompt_attention_mask": mask[0].bool(), "prompt_embeds_2": embeds_2[0],
            "prompt_attention_mask_2": mask_2[0].bool()}


def _forward_kwargs(pipe, noisy, batch, timestep):
    # Text-to-video, as HunyuanVideo15Pipeline calls it: zero condition latents and mask concatenated to the noisy
    # latents, all-zero image embeddings (which the transformer masks out).
    batch_size, _, frames, height, width = noisy.shape
    mask = noisy.new_zeros(batch_size, 1, frames, height, width)
    image_embeds = noisy.new_zeros(batch_size, pipe.vision_num_semantic_tokens, pipe.vision_states_dim)
    return {"hidden_states": torch.cat([noisy, torch.zeros_like(noisy), mask], dim=1), "timestep": timestep,
            "encoder_hidden_states": batch["prompt_embeds"], "encoder_attention_mask": batch["prompt_attention_mask"],
            "encoder_hidden_states_2": batch["prompt_embeds_2"],
            "encoder_attention_mask_2": batch["prompt_attention_mask_2"], "image_embeds": image_embeds,
            "return_dict": False}


def _tiny_transformer():
    from diffusers import HunyuanVideo15Transformer3DModel

    # in_channels = latents (4) + conditioning latents (4) + mask (1), as the pipelines concatenate them.
    return HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=4,
        num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=16,
        image_embed_dim=16, rope_axes_dim=(2, 4, 2),
    )


def _tiny_inputs(g, b):
    mask = torch.ones(b, 12, dtype=torch.bool)
    mask[0, 9:] = False  # padded Qwen tokens: the attention mask must be respected with and without RepVideo
    mask_2 = torch.ones(b, 6, dtype=torch.bool)
    mask_2[-1, 4:] = False  # padded ByT5 tokens
    return {
        "hidden_states": torch.randn(b, 9, 3, 8, 8, generator=g),
        "timestep": torch.tensor([500.0] * b),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "encoder_attention_mask": mask,
        "encoder_hidden_states_2": torch.randn(b, 6, 16, generator=g),
        "encoder_attention_mask_2": mask_2,
        "image_embeds": torch.randn(b, 4, 16, generator=g),  # image-to-video: the image tokens are attended
    }


HUNYUAN_VIDEO_15 = register_family(Family(
    name="HunyuanVideo-1.5",
    transformers=("HunyuanVideo15Transformer3DModel",),
    blocks=(BlockList("transformer_blocks", _JOINT, outputs=(0, 1)),),
    attention=AttentionFacts(
        captured="attn", text_first=False, grid=channels_first_grid,
        # AttnProcessor2_0: the token refiner's self-attention (not captured, but routed with the rest).
        processors=("HunyuanVideo15AttnProcessor2_0", "AttnProcessor2_0"),
    ),
    training=TrainingFacts(
        default_size=_default_size, encode_video=_encode_video, encode_prompt=_encode_prompt,
        max_sequence_length=lambda pipe: pipe.tokenizer_max_length, forward_kwargs=_forward_kwargs,
        # Frames 1 + 4k; height and width: VAE x patch (the released patch is 1, so the VAE's 16).
        size_multiples=lambda pipe: (pipe.vae_scale_factor_temporal,
                                     pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size),
    ),
    tiny=TinyModel("HunyuanVideo-1.5", _tiny_transformer, _tiny_inputs, 4),
    notes="video + text (image, ByT5 and Qwen tokens in joint attention); the token refiner is not gated",
))

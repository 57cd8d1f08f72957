"""EasyAnimate (V5.1: text-to-video, inpaint / image-to-video, control): `EasyAnimateTransformer3DModel`.

Gated: ``transformer_blocks`` in order. Blended: video and text, which flow from block to block together through
joint attention (text first in the key sequence); every block takes and returns both, the MMDiT blocks (separate
text projections) and the blocks after ``mmdit_layers`` (shared projections) alike. The inpaint and control latents
are concatenated to the video channels before the patch embedding, so they reach the blocks only through the video
stream.
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, TrainingFacts, register_family


def _encode_video(pipe, video, generator):
    latents = pipe.vae.encode(video.to(pipe.vae.dtype)).latent_dist.sample(generator=generator)
    return (latents * pipe.vae.config.scaling_factor)[0]  # the inverse of the pipeline's `1 / scaling_factor`


def _encode_prompt(pipe, text, max_sequence_length):
    # The pipeline pads to max_sequence_length and its transformer takes no text mask: the embeddings alone.
    embeds = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
                                device=torch.device("cpu"))[0]
    return embeds[0]


def _forward_kwargs(pipe, noisy, batch, timestep):
    return {"hidden_states": noisy, "timestep": timestep, "encoder_hidden_states": batch["prompt_embeds"],
            "return_dict": False}


def _transformer(in_channels: int = 4):
    def make():
        from diffusers import EasyAnimateTransformer3DModel

        # Rotary positions need a head width the 3D split (t: 1/4, h and w: 3/8 each) divides: 16. Three MMDiT
        # blocks then one with shared text projections, so both kinds of block are covered.
        return EasyAnimateTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, in_channels=in_channels, out_channels=4, patch_size=2,
            sample_width=8, sample_height=8, num_layers=4, mmdit_layers=3, time_embed_dim=8, text_embed_dim=16,
        )

    return make


def _inputs(extra: str | None = None, channels: int = 0):
    def make(g, b):
        inputs = {
            "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),  # 3 latent frames of 8x8 -> 48 video tokens
            "timestep": torch.tensor([500] * b),
            "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        }
        if extra is not None:
            inputs[extra] = torch.randn(b, channels, 3, 8, 8, generator=g)
        return inputs

    return make


EASYANIMATE = register_family(Family(
    name="EasyAnimate",
    transformers=("EasyAnimateTransformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states", "encoder_hidden_states"), outputs=(0, 1)),),
    attention=AttentionFacts(captured="attn1", text_first=True, grid=channels_first_grid,
                             processors=("EasyAnimateAttnProcessor2_0",)),
    training=TrainingFacts(
        default_size=lambda pipe: (512, 512, 49),  # EasyAnimatePipeline.__call__ defaults
        encode_video=_encode_video, encode_prompt=_encode_prompt, max_sequence_length=lambda pipe: 256,
        forward_kwargs=_forward_kwargs,
        # Frames 1 + 4k; height and width: the VAE's downsampling times the 2x2 patches.
        size_multiples=lambda pipe: (pipe.vae_temporal_compression_ratio,
                                     pipe.vae_spatial_compression_ratio * pipe.transformer.config.patch_size),
    ),
    tiny=TinyModel("EasyAnimate", _transformer(), _inputs(), 4),
    # Inpaint / image-to-video: mask (1 channel) + masked-video latents concatenated; control: control latents.
    variants={
        "EasyAnimate-InP": TinyModel("EasyAnimate", _transformer(9), _inputs("inpaint_latents", 5), 4),
        "EasyAnimate-Control": TinyModel("EasyAnimate", _transformer(8), _inputs("control_latents", 4), 4),
    },
    notes="video + text (joint attention)",
))

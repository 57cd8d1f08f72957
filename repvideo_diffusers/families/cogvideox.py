"""CogVideoX (2B, 5B, 1.5; text-to-video and image-to-video): `CogVideoXTransformer3DModel`.

Gated: ``transformer_blocks`` in order. Blended: video and text, which flow from block to block together through
joint attention (text first in the key sequence). This is the model of the official RepVideo code.
"""

from __future__ import annotations

import math

import torch

from ._registry import AttentionFacts, BlockList, Family, TinyModel, TrainingFacts, register_family


def _grid(transformer, args, kwargs):
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    frames, _, height, width = hidden.shape[1:]  # (B, F, C, H, W)
    p, pt = transformer.config.patch_size, transformer.config.patch_size_t or 1
    return math.ceil(frames / pt), height // p, width // p


# --- training -------------------------------------------------------------------------------------------------


def _default_size(pipe):
    config = pipe.transformer.config
    scale = pipe.vae_scale_factor_spatial
    return config.sample_height * scale, config.sample_width * scale, config.sample_frames


def _encode_video(pipe, video, generator):
    latents = pipe.vae.encode(video.to(pipe.vae.dtype)).latent_dist.sample(generator=generator)
    # The transformer takes (B, F, C, H, W), scaled as in the pipeline.
    return (latents * pipe.vae.config.scaling_factor).permute(0, 2, 1, 3, 4)[0]


def _encode_prompt(pipe, text, max_sequence_length):
    embeds, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
                                   device=torch.device("cpu"))
    return embeds[0]


def _forward_kwargs(pipe, noisy, batch, timestep):
    from .._compat import cogvideox_rotary_embeddings

    kwargs = {"hidden_states": noisy, "encoder_hidden_states": batch["prompt_embeds"], "timestep": timestep,
              "return_dict": False}
    if pipe.transformer.config.use_rotary_positional_embeddings:  # CogVideoX-5B and 1.5
        frames, height, width = noisy.shape[1], noisy.shape[3], noisy.shape[4]
        scale = pipe.vae_scale_factor_spatial
        kwargs["image_rotary_emb"] = cogvideox_rotary_embeddings(pipe, height * scale, width * scale, frames,
                                                                 noisy.device)
    return kwargs


# --- tiny configurations ------------------------------------------------------------------------------------------


def _tiny_transformer():
    from ..tiny import build_tiny_transformer

    return build_tiny_transformer(num_layers=4)


def _tiny_inputs(g, b):
    # 3 latent frames of 8x12 (patch 2 -> 72 video tokens) + 16 text tokens
    return {
        "hidden_states": torch.randn(b, 3, 4, 8, 12, generator=g),
        "encoder_hidden_states": torch.randn(b, 16, 16, generator=g),
        "timestep": torch.tensor([500] * b),
    }


def _variant(**config):
    def make():
        from diffusers import CogVideoXTransformer3DModel

        return CogVideoXTransformer3DModel(
            num_attention_heads=2, attention_head_dim=16, out_channels=4, time_embed_dim=8, text_embed_dim=16,
            num_layers=4, sample_width=12, sample_height=8, sample_frames=9, patch_size=2,
            temporal_compression_ratio=4, max_text_seq_length=16, norm_eps=1e-5,
            use_rotary_positional_embeddings=True, **config,
        )

    return make


def _rotary_inputs(in_channels, frames, patch_size_t=None, ofs=False):
    def make(g, b):
        from diffusers.models.embeddings import get_3d_rotary_pos_embed

        grid_frames = frames if patch_size_t is None else (frames + patch_size_t - 1) // patch_size_t
        rotary = get_3d_rotary_pos_embed(
            embed_dim=16, crops_coords=None if patch_size_t else ((0, 0), (4, 6)), grid_size=(4, 6),
            temporal_size=grid_frames, **({"grid_type": "slice", "max_size": (4, 6)} if patch_size_t else {}),
        )
        inputs = {
            "hidden_states": torch.randn(b, frames, in_channels, 8, 12, generator=g),
            "encoder_hidden_states": torch.randn(b, 16, 16, generator=g),
            "timestep": torch.tensor([500] * b),
            "image_rotary_emb": rotary,
        }
        if ofs:
            inputs["ofs"] = torch.full((b,), 2.0)
        return inputs

    return make


COGVIDEOX = register_family(Family(
    name="CogVideoX",
    transformers=("CogVideoXTransformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states", "encoder_hidden_states"), outputs=(0, 1)),),
    attention=AttentionFacts(captured="attn1", text_first=True, grid=_grid, processors=("CogVideoXAttnProcessor2_0",)),
    training=TrainingFacts(
        default_size=_default_size, encode_video=_encode_video, encode_prompt=_encode_prompt,
        max_sequence_length=lambda pipe: pipe.transformer.config.max_text_seq_length, forward_kwargs=_forward_kwargs,
    ),
    tiny=TinyModel("CogVideoX", _tiny_transformer, _tiny_inputs, 4),
    # The same class in its other released configurations: rotary positions (5B, 1.5), temporal patches (1.5),
    # image conditioning through doubled input channels (I2V) and the ofs embedding (1.5 I2V).
    variants={
        "CogVideoX-5B-I2V": TinyModel("CogVideoX", _variant(in_channels=8), _rotary_inputs(8, frames=3), 4),
        "CogVideoX-1.5-T2V": TinyModel("CogVideoX", _variant(in_channels=4, patch_size_t=2),
                                       _rotary_inputs(4, 4, 2), 4),
        "CogVideoX-1.5-I2V": TinyModel("CogVideoX", _variant(in_channels=8, patch_size_t=2, ofs_embed_dim=8),
                                       _rotary_inputs(8, 4, 2, ofs=True), 4),
    },
    notes="video + text (joint attention)",
))

"""LTX-2 (2.0, 2.3; audio-video): `LTX2VideoTransformer3DModel`.

Gated: ``transformer_blocks`` in order (`LTX2VideoTransformerBlock`). Blended: the video stream and the audio
stream. Both flow from block to block (the block takes and returns ``(hidden_states, audio_hidden_states)``) and
exchange information inside every block through audio-to-video and video-to-audio cross-attention, so each has its
own feature cache mean, blended with the same gate. The text (``encoder_hidden_states`` and
``audio_encoder_hidden_states``) enters every block unchanged through cross-attention: a condition, not a stream.

The transformer returns ``(video, audio)``; both outputs depend on both blended streams.
"""

from __future__ import annotations

import torch

from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family


def _grid(transformer, args, kwargs):
    config = transformer.config
    frames, height, width = (kwargs.get(name) for name in ("num_frames", "height", "width"))
    if None in (frames, height, width):
        raise ValueError(
            "Attention capture needs the latent grid of an LTX2VideoTransformer3DModel call: pass num_frames, height "
            "and width (the LTX-2 pipelines do), not only video_coords."
        )
    return frames // (config.patch_size_t or 1), height // config.patch_size, width // config.patch_size


# LTX-2.3's configuration: gated attention, prompt AdaLN, perturbed (STG-capable) processors, text already projected
# by the connectors to each stream's width. Built by tests/test_family_ltx2.py, not registered in `variants`:
# tests/test_core_semantics.py takes every registered variant for a CogVideoX configuration.
LTX23_CONFIG = dict(gated_attn=True, cross_attn_mod=True, audio_gated_attn=True, audio_cross_attn_mod=True,
                    perturbed_attn=True, use_prompt_embeddings=False)


def _tiny_transformer(**config):
    """A 4-block tiny model (video 2 heads x 8, audio 2 heads x 4); ``config`` overrides, e.g. `LTX23_CONFIG`."""

    def make():
        from diffusers import LTX2VideoTransformer3DModel

        return LTX2VideoTransformer3DModel(**{
            **dict(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
                   attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
                   audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=4,
                   caption_channels=16, rope_double_precision=False, rope_type="split"),
            **config,
        })

    return make


def _tiny_inputs(text_width: int = 16, audio_text_width: int = 16, ltx23: bool = False):
    def make(g, b):
        # 3 latent frames of 4 x 4 (patch 1: 48 video tokens), 10 audio latent frames, 12 text tokens
        frames, height, width, audio_frames = 3, 4, 4, 10
        mask = torch.ones(b, 12)
        mask[0, 9:] = 0  # padded text: the mask must be respected with and without RepVideo
        inputs = {
            "hidden_states": torch.randn(b, frames * height * width, 4, generator=g),
            "audio_hidden_states": torch.randn(b, audio_frames, 4, generator=g),
            "encoder_hidden_states": torch.randn(b, 12, text_width, generator=g),
            "audio_encoder_hidden_states": torch.randn(b, 12, audio_text_width, generator=g),
            "timestep": torch.tensor([500.0] * b),
            "encoder_attention_mask": mask,
            "audio_encoder_attention_mask": mask,
            "num_frames": frames,
            "height": height,
            "width": width,
            "audio_num_frames": audio_frames,
            "fps": 25.0,
        }
        if ltx23:  # the prompt modulation and the cross-modal timesteps read the sigmas
            inputs.update(sigma=torch.tensor([0.5] * b), audio_sigma=torch.tensor([0.5] * b), use_cross_timestep=True)
        return inputs

    return make


LTX2 = register_family(Family(
    name="LTX-2",
    transformers=("LTX2VideoTransformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states", "audio_hidden_states"), outputs=(0, 1)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=_grid,
                             processors=("LTX2AudioVideoAttnProcessor", "LTX2PerturbedAttnProcessor")),
    tiny=TinyModel("LTX-2", _tiny_transformer(), _tiny_inputs(), 4),
    notes="video + audio (the audio-visual blocks carry both streams; text is a cross-attention condition)",
))

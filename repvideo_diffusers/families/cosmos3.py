"""Cosmos 3 (Omni: text/image/video to video, with optional sound and actions): `Cosmos3OmniTransformer`.

A mixture-of-transformers language model that is the video generator itself: `Cosmos3OmniPipeline` packs one sample
into one joint sequence, the prompt's text tokens first (the *understanding* pathway, ``und_seq``) and then the
generated modalities (the *generation* pathway, ``gen_seq``: the patchified video latents, then sound and action
tokens when enabled). Every decoder layer (`Cosmos3VLTextMoTDecoderLayer`) takes and returns both pathways, with
separate weights for each: the text tokens attend causally to text, the generation tokens attend to text and
generation tokens alike.

Gated: ``layers`` in order. Blended: the generation stream ``gen_seq`` (the video, first) and the text stream
``und_seq``, which flows from layer to layer beside it and whose keys every generation query reads, as text does in
joint attention. Each layer returns ``(und_seq, gen_seq)``: ``gen_seq`` sits at output 1. The sequences are packed
without a batch dimension (``(tokens, hidden)``); the blend is elementwise, so that changes nothing.

No attention facts: each layer's processor makes two SDPA calls (the causal text pathway, then the generation
pathway over text and generation keys), and attention capture records every SDPA call of a processor as one sample
of the batch; the generation tokens also mix video with sound and action tokens, so the video token grid is not the
tail of the key sequence.
"""

from __future__ import annotations

import torch

from ._registry import BlockList, Family, TinyModel, register_family

# The tiny forward: 12 text tokens, then 3 latent frames of 8 x 8 patched 2 x 2 (48 video tokens).
_TEXT_TOKENS, _FRAMES, _LATENT_SIZE, _PATCH, _CHANNELS = 12, 3, 8, 2, 4


def _tiny_config(**overrides):
    config = dict(
        hidden_size=32, head_dim=8, num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
        num_hidden_layers=4, latent_channel=_CHANNELS, latent_patch_size=_PATCH,
        patch_latent_dim=_CHANNELS * _PATCH * _PATCH, vocab_size=64, rope_axes_dim=(2, 1, 1),
        unified_3d_mrope_temporal_modality_margin=16, base_fps=24,
    )
    return {**config, **overrides}


def _tiny_transformer(**overrides):
    """A 4-layer tiny model (hidden 32, 4 query / 2 key-value heads of 8); ``overrides`` change its config."""

    def make():
        from diffusers import Cosmos3OmniTransformer

        return Cosmos3OmniTransformer(**_tiny_config(**overrides))

    return make


def _tiny_inputs(sound_frames: int = 0, fps: float = 24.0):
    """One packed sample (the model takes one sample per call, so the batch size is ignored), laid out as
    `Cosmos3OmniPipeline` lays it out: the text positions, then the video's 3D positions after a modality margin
    (and ``sound_frames`` sound tokens after the video, sharing its temporal offset). The first latent frame is the
    clean image condition (image-to-video); the others are noisy."""

    def make(g, b):
        from diffusers.pipelines.cosmos.pipeline_cosmos3_omni import (
            get_3d_mrope_ids_text_tokens,
            get_3d_mrope_ids_vae_tokens,
        )

        config = _tiny_config()
        text_positions, offset = get_3d_mrope_ids_text_tokens(_TEXT_TOKENS, 0, use_float_positions=True)
        offset = offset + config["unified_3d_mrope_temporal_modality_margin"]
        grid = (_FRAMES, _LATENT_SIZE // _PATCH, _LATENT_SIZE // _PATCH)
        video_positions, _ = get_3d_mrope_ids_vae_tokens(
            *grid, temporal_offset=offset, fps=fps, base_fps=float(config["base_fps"]), temporal_compression_factor=4)
        video_tokens = grid[0] * grid[1] * grid[2]
        frame_tokens = grid[1] * grid[2]
        noisy = torch.arange(1, _FRAMES)
        mse = torch.cat([torch.arange(_TEXT_TOKENS + f * frame_tokens, _TEXT_TOKENS + (f + 1) * frame_tokens)
                         for f in noisy.tolist()])
        inputs = {
            "input_ids": torch.randint(0, config["vocab_size"], (_TEXT_TOKENS,), generator=g),
            "text_indexes": torch.arange(_TEXT_TOKENS),
            "position_ids": torch.cat([text_positions, video_positions.float()], dim=1),
            "und_len": _TEXT_TOKENS,
            "sequence_length": _TEXT_TOKENS + video_tokens + sound_frames,
            "vision_tokens": [torch.randn(1, _CHANNELS, _FRAMES, _LATENT_SIZE, _LATENT_SIZE, generator=g)],
            "vision_token_shapes": [grid],
            "vision_sequence_indexes": torch.arange(_TEXT_TOKENS, _TEXT_TOKENS + video_tokens),
            "vision_mse_loss_indexes": mse,
            "vision_timesteps": torch.full((len(noisy) * frame_tokens,), 500.0),
            "vision_noisy_frame_indexes": [noisy],
        }
        if sound_frames:
            sound_positions, _ = get_3d_mrope_ids_vae_tokens(
                sound_frames, 1, 1, temporal_offset=offset, fps=25.0, base_fps=float(config["base_fps"]),
                temporal_compression_factor=1)
            start = _TEXT_TOKENS + video_tokens
            inputs["position_ids"] = torch.cat([inputs["position_ids"], sound_positions.float()], dim=1)
            inputs.update(
                sound_tokens=[torch.randn(_CHANNELS, sound_frames, generator=g)],
                sound_token_shapes=[(sound_frames, 1, 1)],
                sound_sequence_indexes=torch.arange(start, start + sound_frames),
                sound_mse_loss_indexes=torch.arange(start, start + sound_frames),
                sound_timesteps=torch.full((sound_frames,), 500.0),
                sound_noisy_frame_indexes=[torch.arange(sound_frames)],
            )
        return inputs

    return make


COSMOS3 = register_family(Family(
    name="Cosmos3",
    transformers=("Cosmos3OmniTransformer",),
    blocks=(BlockList("layers", ("gen_seq", "und_seq"), outputs=(1, 0)),),
    tiny=TinyModel("Cosmos3", _tiny_transformer(), _tiny_inputs(), 4),
    notes="video (+ sound, action) generation stream + text stream (mixture-of-transformers layers)",
))

"""Wan 2.1 / 2.2: `WanTransformer3DModel`.

Gated: ``blocks`` in order. Blended: the video stream only; text enters every block unchanged through
cross-attention, so it is a condition, not a stream. Wan 2.2 A14B pipelines carry a second transformer
(``transformer_2``) of the same class.
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, TrainingFacts, register_family


def _encode_video(pipe, video, generator):
    vae = pipe.vae
    latents = vae.encode(video.to(vae.dtype)).latent_dist.sample(generator=generator)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    return ((latents - mean) / std)[0]  # the inverse of WanPipeline's decode normalisation


def _encode_prompt(pipe, text, max_sequence_length):
    embeds, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
                                   device=torch.device("cpu"))
    return embeds[0]


def _forward_kwargs(pipe, noisy, batch, timestep):
    return {"hidden_states": noisy, "encoder_hidden_states": batch["prompt_embeds"], "timestep": timestep,
            "return_dict": False}


def _tiny_transformer():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, rope_max_seq_len=32,
    )


def _tiny_inputs(g, b):
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.tensor([500] * b),
    }


WAN = register_family(Family(
    name="Wan",
    transformers=("WanTransformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("WanAttnProcessor", "WanAttnProcessor2_0")),
    training=TrainingFacts(
        default_size=lambda pipe: (480, 832, 81),  # WanPipeline.__call__ defaults
        encode_video=_encode_video, encode_prompt=_encode_prompt, max_sequence_length=lambda pipe: 512,
        forward_kwargs=_forward_kwargs,
    ),
    tiny=TinyModel("Wan", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text is a cross-attention condition)",
))

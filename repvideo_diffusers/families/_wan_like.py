"""What the Wan-style families share (Wan, SkyReels-V2, ChronoEdit): the Wan VAE's latent normalisation, T5 prompt
embeddings, the plain forward call, and one tiny configuration shape."""

from __future__ import annotations

import torch


def encode_video(pipe, video, generator):
    """Normalised Wan-VAE latents: the inverse of the pipelines' decode normalisation."""
    vae = pipe.vae
    latents = vae.encode(video.to(vae.dtype)).latent_dist.sample(generator=generator)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    return ((latents - mean) / std)[0]


def encode_prompt(pipe, text, max_sequence_length):
    embeds, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
                                   device=torch.device("cpu"))
    return embeds[0]


def forward_kwargs(pipe, noisy, batch, timestep):
    return {"hidden_states": noisy, "encoder_hidden_states": batch["prompt_embeds"], "timestep": timestep,
            "return_dict": False}


def tiny_transformer(cls_name: str):
    """A 4-block transformer of a Wan-style class: 2 heads x 8, text width 16, (1, 2, 2) patches."""

    def make():
        import diffusers

        return getattr(diffusers, cls_name)(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
            text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, rope_max_seq_len=32,
        )

    return make


def tiny_inputs(g, b):
    """3 latent frames of 8 x 8 (48 video tokens after patching) and 12 text tokens."""
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.tensor([500] * b),
    }

"""SkyReels-V2 (text-to-video, image-to-video and diffusion-forcing checkpoints): `SkyReelsV2Transformer3DModel`.

Gated: ``blocks`` in order (``SkyReelsV2TransformerBlock``). Blended: the video stream only. Text, and the CLIP
image tokens of the image-to-video checkpoints (prepended to the text), enter every block unchanged through
cross-attention: conditions, not streams. The diffusion-forcing checkpoints change only what the blocks are given
(a per-frame timestep modulation and, with ``num_frame_per_block > 1``, a block-causal self-attention mask), not
which stream flows from block to block, so the same facts cover them. The transformer is not a subclass of
`WanTransformer3DModel` (its own block and attention classes), so it never matches the Wan family.
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
    return ((latents - mean) / std)[0]  # the inverse of SkyReelsV2Pipeline's decode normalisation


def _encode_prompt(pipe, text, max_sequence_length):
    embeds, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
                                   device=torch.device("cpu"))
    return embeds[0]


def _forward_kwargs(pipe, noisy, batch, timestep):
    return {"hidden_states": noisy, "encoder_hidden_states": batch["prompt_embeds"], "timestep": timestep,
            "return_dict": False}


def _tiny_transformer():
    from diffusers import SkyReelsV2Transformer3DModel

    return SkyReelsV2Transformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, rope_max_seq_len=32,
    )


def _tiny_inputs(g, b):
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.tensor([500] * b),
    }


SKYREELS_V2 = register_family(Family(
    name="SkyReels-V2",
    transformers=("SkyReelsV2Transformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("SkyReelsV2AttnProcessor",)),
    training=TrainingFacts(
        default_size=lambda pipe: (544, 960, 97),  # SkyReelsV2Pipeline.__call__ defaults
        encode_video=_encode_video, encode_prompt=_encode_prompt, max_sequence_length=lambda pipe: 512,
        forward_kwargs=_forward_kwargs,
    ),
    tiny=TinyModel("SkyReels-V2", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text and CLIP image tokens are cross-attention conditions)",
))

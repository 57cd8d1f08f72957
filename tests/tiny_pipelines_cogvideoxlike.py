"""Tiny random pipelines of the ConsisID, Allegro, EasyAnimate and Cosmos families, built in the test process.

No download: T5 encoders come from `tiny_pipelines.t5`, other text encoders from tiny random configurations with a
tokenizer built in-process. Each ``*_call`` runs a pipeline for a few steps and returns the denoised latents (what
the transformer produces, before a VAE blurs differences) as a float tensor.
"""

import numpy as np
import torch
from PIL import Image

from tiny_pipelines import t5


def image(size: int = 64, seed: int = 0) -> Image.Image:
    """A seeded random RGB picture (the conditioning image of image-to-video pipelines)."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _latents(output) -> torch.Tensor:
    frames = output.frames
    return (frames if torch.is_tensor(frames) else torch.as_tensor(np.asarray(frames))).detach().float().clone()


# --- ConsisID (CogVideoX VAE, T5) ------------------------------------------------------------------------------------


def cogvideox_vae(seed: int = 1, latent_channels: int = 4):
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(seed)
    return AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 16, 16),
        latent_channels=latent_channels, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
        sample_height=64, sample_width=64,
    )


def consisid_pipeline(seed: int = 0):
    from diffusers import CogVideoXDPMScheduler, ConsisIDPipeline

    from repvideo_diffusers.families import get_family_by_name

    tokenizer, text_encoder = t5(seed)
    torch.manual_seed(seed + 2)
    transformer = get_family_by_name("ConsisID").tiny.make_transformer().eval()
    scheduler = CogVideoXDPMScheduler(
        beta_schedule="scaled_linear", prediction_type="v_prediction", rescale_betas_zero_snr=True,
        timestep_spacing="trailing", clip_sample=False, snr_shift_scale=1.0,
    )
    return ConsisIDPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=cogvideox_vae(seed + 1),
                            transformer=transformer, scheduler=scheduler)


def consisid_call(pipe, steps: int = 3, seed: int = 0, guidance_scale: float = 1.0):
    """Face features as the face models (insightface, EVA-CLIP) would give them, but random: the pipeline takes
    them as tensors, so no face model is needed to run it."""
    g = torch.Generator().manual_seed(seed + 100)
    id_cond = torch.randn(1, 8, generator=g)
    id_vit_hidden = [torch.randn(1, 5, 8, generator=g) for _ in range(2)]
    return _latents(pipe(
        image=image(64, seed), prompt="a person smiling", height=64, width=64, num_frames=9,
        num_inference_steps=steps, guidance_scale=guidance_scale, max_sequence_length=16, output_type="latent",
        generator=torch.Generator().manual_seed(seed), id_cond=id_cond, id_vit_hidden=id_vit_hidden,
    ))


# --- Allegro (Allegro VAE, T5) ---------------------------------------------------------------------------------------


def allegro_pipeline(seed: int = 0):
    from diffusers import AllegroPipeline, AutoencoderKLAllegro, EulerAncestralDiscreteScheduler

    from repvideo_diffusers.families import get_family_by_name

    tokenizer, text_encoder = t5(seed)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLAllegro(
        block_out_channels=(8, 8, 16, 16), latent_channels=4, layers_per_block=1, norm_num_groups=2,
        sample_size=64,
    )
    torch.manual_seed(seed + 2)
    transformer = get_family_by_name("Allegro").tiny.make_transformer().eval()
    return AllegroPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                           scheduler=EulerAncestralDiscreteScheduler())


def allegro_call(pipe, steps: int = 3, seed: int = 0, guidance_scale: float = 1.0):
    # 9 frames of 64x64 -> 3 latent frames of 8x8; an odd frame count keeps the first frame apart, as released.
    return _latents(pipe(
        "a fox in snow", num_inference_steps=steps, guidance_scale=guidance_scale, num_frames=9, height=64, width=64,
        max_sequence_length=16, clean_caption=False, output_type="latent",
        generator=torch.Generator().manual_seed(seed),
    ))

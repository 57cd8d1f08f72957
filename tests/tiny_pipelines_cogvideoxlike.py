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


# --- EasyAnimate (Magvit VAE, Qwen2-VL) ------------------------------------------------------------------------------

# EasyAnimate's encode_prompt wraps every prompt in the tokenizer's chat template: a minimal one of our own.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{% for part in message['content'] %}{{ part['text'] }}"
    "{% endfor %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def qwen2_vl(seed: int = 0):
    """(tokenizer with a chat template, Qwen2-VL of text width 16): EasyAnimate V5.1's text encoder, tiny and
    random; the tokenizer is the in-process unigram one (the encoder only needs ids inside its vocabulary)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    from repvideo_diffusers.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         bos_token_id=None, eos_token_id=1, pad_token_id=0,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]}),
        vision_config=dict(depth=1, embed_dim=16, hidden_size=16, num_heads=2, mlp_ratio=1, patch_size=2,
                           spatial_merge_size=1, temporal_patch_size=1),
    )
    return tokenizer, Qwen2VLForConditionalGeneration(config).eval()


def magvit_vae(seed: int = 1):
    from diffusers import AutoencoderKLMagvit

    torch.manual_seed(seed)
    return AutoencoderKLMagvit(latent_channels=4, block_out_channels=(8, 8, 16, 16), layers_per_block=1,
                               norm_num_groups=2)


def easyanimate_pipeline(kind: str = "t2v", seed: int = 0):
    """``kind``: ``"t2v"`` (EasyAnimatePipeline), ``"inpaint"`` (EasyAnimateInpaintPipeline, image-to-video) or
    ``"control"`` (EasyAnimateControlPipeline)."""
    import diffusers

    from repvideo_diffusers.families import get_family_by_name

    family = get_family_by_name("EasyAnimate")
    tiny = {"t2v": family.tiny, "inpaint": family.variants["EasyAnimate-InP"],
            "control": family.variants["EasyAnimate-Control"]}[kind]
    cls = {"t2v": "EasyAnimatePipeline", "inpaint": "EasyAnimateInpaintPipeline",
           "control": "EasyAnimateControlPipeline"}[kind]
    tokenizer, text_encoder = qwen2_vl(seed)
    vae = magvit_vae(seed + 1)
    if kind == "inpaint":
        # diffusers 0.42.1's inpaint pipeline reads `vae.config.cache_mag_vae`, which AutoencoderKLMagvit does not
        # register (an AttributeError otherwise); EasyAnimate's own VAE config has it: resize the first latent
        # frame's mask on its own.
        vae.register_to_config(cache_mag_vae=True)
    torch.manual_seed(seed + 2)
    transformer = tiny.make_transformer().eval()
    return getattr(diffusers, cls)(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                                   scheduler=diffusers.FlowMatchEulerDiscreteScheduler())


def easyanimate_call(pipe, steps: int = 2, seed: int = 0, guidance_scale: float = 1.0):
    """9 frames of 64x64 -> 3 latent frames of 8x8 (the text is padded to the pipeline's 256 tokens)."""
    # With guidance, the pipeline needs a negative prompt (it iterates over None otherwise).
    extra = {"negative_prompt": "blurry"} if guidance_scale > 1 else {}
    name = type(pipe).__name__
    if name == "EasyAnimateInpaintPipeline":  # image-to-video: the first frame given, the rest to generate
        video = torch.zeros(1, 3, 9, 64, 64)
        video[:, :, 0] = torch.from_numpy(np.array(image(64, seed), dtype=np.float32)).permute(2, 0, 1) / 255
        mask = torch.ones(1, 1, 9, 64, 64)
        mask[:, :, 0] = 0
        extra.update(video=video, mask_video=mask * 255)
    elif name == "EasyAnimateControlPipeline":
        g = torch.Generator().manual_seed(seed + 100)
        extra["control_video"] = torch.rand(1, 3, 9, 64, 64, generator=g)
    return _latents(pipe(
        "a fox in snow", num_frames=9, height=64, width=64, num_inference_steps=steps, guidance_scale=guidance_scale,
        output_type="latent", generator=torch.Generator().manual_seed(seed), **extra,
    ))


# --- Cosmos (Cosmos VAE or Wan VAE, T5, a stand-in safety checker) ----------------------------------------------------


def _safety_checker_class():
    from diffusers import ConfigMixin, ModelMixin

    class PassThroughSafetyChecker(ModelMixin, ConfigMixin):
        """Stands in for Cosmos Guardrail (the `cosmos_guardrail` package and its own models, not installable
        offline): every prompt passes, every video comes back unchanged. The pipelines refuse to run without a
        safety checker, so the tests give them this one."""

        def __init__(self):
            super().__init__()
            self._dtype_anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)

        def check_text_safety(self, prompt: str) -> bool:
            return True

        def check_video_safety(self, frames):
            return frames

    return PassThroughSafetyChecker


def cosmos_vae(seed: int = 1):
    from diffusers import AutoencoderKLCosmos

    torch.manual_seed(seed)
    # 4x spatial, 4x temporal compression; no latent statistics (the pipeline then scales by sigma_data alone)
    return AutoencoderKLCosmos(
        latent_channels=4, encoder_block_out_channels=(8, 8, 8, 8), decode_block_out_channels=(8, 8, 8, 8),
        attention_resolutions=(8,), resolution=64, num_layers=1, patch_size=4, spatial_compression_ratio=4,
        temporal_compression_ratio=4, latents_mean=None, latents_std=None,
    )


def cosmos_pipeline(kind: str = "text2world", seed: int = 0):
    """``kind``: ``"text2world"`` / ``"video2world"`` (Predict 1.0: Cosmos VAE, EDM scheduler) or
    ``"2.0-video2world"`` (Predict 2.0: Wan VAE, flow matching)."""
    import diffusers
    from diffusers import CosmosTransformer3DModel

    from repvideo_diffusers.families import get_family_by_name
    from repvideo_diffusers.families.cosmos import VARIANTS

    tokenizer, text_encoder = t5(seed)
    safety_checker = _safety_checker_class()()
    torch.manual_seed(seed + 2)
    if kind == "2.0-video2world":
        from tiny_pipelines import wan_vae

        config = {**VARIANTS["Cosmos-2.0-Video2World"].make_transformer().config, "in_channels": 17,
                  "out_channels": 16}  # the Wan VAE's 16 latent channels (+ the condition mask)
        torch.manual_seed(seed + 2)
        return diffusers.Cosmos2VideoToWorldPipeline(
            text_encoder=text_encoder, tokenizer=tokenizer, transformer=CosmosTransformer3DModel.from_config(config),
            vae=wan_vae(seed + 1), scheduler=diffusers.FlowMatchEulerDiscreteScheduler(use_karras_sigmas=True),
            safety_checker=safety_checker,
        )
    tiny = get_family_by_name("Cosmos").tiny if kind == "text2world" else VARIANTS["Cosmos-1.0-Video2World"]
    transformer = tiny.make_transformer().eval()
    scheduler = diffusers.EDMEulerScheduler(sigma_min=0.002, sigma_max=80.0, sigma_data=0.5, sigma_schedule="karras",
                                            num_train_timesteps=1000, prediction_type="epsilon", rho=7.0,
                                            final_sigmas_type="sigma_min")
    cls = diffusers.CosmosTextToWorldPipeline if kind == "text2world" else diffusers.CosmosVideoToWorldPipeline
    return cls(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=cosmos_vae(seed + 1),
               scheduler=scheduler, safety_checker=safety_checker)


def cosmos_call(pipe, steps: int = 3, seed: int = 0, guidance_scale: float = 1.0):
    """9 frames -> 3 latent frames: 8x8 for text2world (32x32 pixels through the 4x Cosmos VAE); 4x4 for
    video2world, whose VAE encodes the conditioning video at every call (16x16 pixels, 32x32 through the 8x Wan VAE)."""
    name = type(pipe).__name__
    size = {"CosmosTextToWorldPipeline": 32, "CosmosVideoToWorldPipeline": 16, "Cosmos2VideoToWorldPipeline": 32}[name]
    extra = {} if name == "CosmosTextToWorldPipeline" else {"image": image(size, seed)}
    if guidance_scale > 1:  # the default negative prompt is long: a short one keeps the 16 tokens quiet
        extra["negative_prompt"] = "blurry"
    return _latents(pipe(
        prompt="a robot arm", num_frames=9, height=size, width=size, num_inference_steps=steps,
        guidance_scale=guidance_scale, max_sequence_length=16, output_type="latent",
        generator=torch.Generator().manual_seed(seed), **extra,
    ))

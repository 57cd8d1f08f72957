"""Tiny random image-to-video and video-to-video pipelines of CogVideoX, Wan, LTX-Video and HunyuanVideo, built in
the test process without any download (text encoders, VAEs, image encoders and transformers from tiny random
configs)."""

import numpy as np
import PIL.Image
import torch

from tiny_pipelines import t5, wan_transformer, wan_vae
from tiny_pipelines_wanlike import TEXT, clip_vision, ftfy_stand_in


def image(seed: int = 0, size: int = 32) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def video(frames: int, seed: int = 0, size: int = 32) -> list:
    return [image(seed * 100 + i, size) for i in range(frames)]


def _eval(pipe):
    """Every model of ``pipe`` in eval mode (fresh models are in training mode: dropout would make calls differ)."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            component.eval()
    return pipe


# CogVideoX ---------------------------------------------------------------------------------------------------------

def _cogvideox_parts(in_channels: int):
    """The embedded tiny CogVideoX pipeline's parts; the transformer gets ``in_channels`` (8 for I2V: noise + image
    latents concatenated on the channel axis)."""
    from diffusers import CogVideoXTransformer3DModel

    from repvideo_diffusers.tiny import build_tiny_pipeline

    parts = dict(build_tiny_pipeline().components)
    parts["text_encoder"].eval()  # a fresh model is in training mode: dropout would make every call differ
    if in_channels != 4:
        torch.manual_seed(2)
        config = dict(parts["transformer"].config)
        parts["transformer"] = CogVideoXTransformer3DModel.from_config({**config, "in_channels": in_channels})
    return parts


def cogvideox_i2v_pipeline():
    from diffusers import CogVideoXImageToVideoPipeline

    return _eval(CogVideoXImageToVideoPipeline(**_cogvideox_parts(in_channels=8)))


def cogvideox_v2v_pipeline():
    from diffusers import CogVideoXVideoToVideoPipeline

    return _eval(CogVideoXVideoToVideoPipeline(**_cogvideox_parts(in_channels=4)))


# Wan ---------------------------------------------------------------------------------------------------------------

def _flow_match():
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(shift=3.0)


def wan21_i2v_pipeline():
    """Wan 2.1 I2V: 16 noise + 4 mask + 16 image-latent channels, CLIP image tokens through added K/V projections."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    tokenizer, text_encoder = t5(umt5=True)
    image_processor, image_encoder = clip_vision()
    torch.manual_seed(2)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=36, out_channels=16,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=3, rope_max_seq_len=32, image_dim=16, added_kv_proj_dim=16,
    )
    return _eval(WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=wan_vae(),
                                         scheduler=_flow_match(), image_processor=image_processor,
                                         image_encoder=image_encoder, transformer=transformer))


def wan22_ti2v_pipeline():
    """Wan 2.2 TI2V-style: no image encoder, the image latents replace the first latent frame
    (``expand_timesteps``: per-token timesteps, 0 on the conditioning frame)."""
    from diffusers import WanImageToVideoPipeline

    tokenizer, text_encoder = t5(umt5=True)
    return _eval(WanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=wan_vae(),
                                         scheduler=_flow_match(), transformer=wan_transformer(2),
                                         expand_timesteps=True))


def wan_v2v_pipeline():
    from diffusers import WanVideoToVideoPipeline

    tokenizer, text_encoder = t5(umt5=True)
    return _eval(WanVideoToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder,
                                         transformer=wan_transformer(2), vae=wan_vae(), scheduler=_flow_match()))


# LTX-Video ---------------------------------------------------------------------------------------------------------

def _ltx_parts():
    """As `test_train_families._tiny_ltx_pipeline`: 4x spatial / 4x temporal VAE of 8 latent channels, patch 1."""
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler

    from repvideo_diffusers.testing import TINY_MODELS

    tokenizer, text_encoder = t5()
    torch.manual_seed(1)
    vae = AutoencoderKLLTXVideo(
        in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1), spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False), decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4, upsample_factor=(1,) * 4, timestep_conditioning=False, patch_size=1,
        patch_size_t=1, encoder_causal=True, decoder_causal=False, scaling_factor=0.8,
    )
    vae.latents_mean.copy_(torch.linspace(-0.5, 0.5, 8))
    vae.latents_std.copy_(torch.linspace(0.5, 2.0, 8))
    transformer, _ = TINY_MODELS["LTX-Video"].build(seed=0)
    return dict(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                transformer=transformer)


def ltx_i2v_pipeline():
    from diffusers import LTXImageToVideoPipeline

    return _eval(LTXImageToVideoPipeline(**_ltx_parts()))


def ltx_condition_pipeline():
    from diffusers import LTXConditionPipeline

    return _eval(LTXConditionPipeline(**_ltx_parts()))


# Calls -------------------------------------------------------------------------------------------------------------

def call_arguments(pipe, steps: int = 2, seed: int = 0) -> dict:
    """One tiny call of any pipeline of this file, returning latents (``output_type="latent"``)."""
    name = type(pipe).__name__
    call = dict(prompt="a fox in snow", num_inference_steps=steps, height=32, width=32, output_type="latent",
                generator=torch.Generator().manual_seed(seed), max_sequence_length=16)
    if name == "CogVideoXImageToVideoPipeline":
        call.update(image=image(), num_frames=5, guidance_scale=1.0)
    elif name == "CogVideoXVideoToVideoPipeline":
        call.update(video=video(5), strength=0.8, guidance_scale=1.0)
    elif name == "WanImageToVideoPipeline":
        text = TEXT if pipe.image_encoder is not None else 16  # CLIP tokens are split off at 512 text tokens
        call.update(image=image(), num_frames=5, guidance_scale=1.0, max_sequence_length=text)
    elif name == "WanVideoToVideoPipeline":
        call.update(video=video(5), strength=0.8, guidance_scale=1.0)
    elif name == "LTXImageToVideoPipeline":
        call.update(image=image(), num_frames=9, guidance_scale=1.0)
    elif name == "LTXConditionPipeline":
        call.update(video=video(5), num_frames=9, guidance_scale=1.0, strength=1.0, frame_index=0)
    elif name == "HunyuanVideoImageToVideoPipeline":
        call.update(image=image(), prompt="a red fox in snow", num_frames=5, guidance_scale=1.0)
    else:
        raise ValueError(f"no tiny call for {name}")
    return call


def run(pipe, steps: int = 2, seed: int = 0) -> np.ndarray:
    """The denoised latents of one tiny call (Wan's pipelines call `ftfy` unguarded: a stand-in if it is absent)."""
    with ftfy_stand_in(pipe):
        frames = pipe(**call_arguments(pipe, steps, seed)).frames
    return frames.detach().float().numpy() if torch.is_tensor(frames) else np.asarray(frames)


# HunyuanVideo ------------------------------------------------------------------------------------------------------

def hunyuan_i2v_pipeline(image_condition_type: str = "latent_concat", seed: int = 0):
    """HunyuanVideoImageToVideoPipeline: a tiny Llava (2-layer Llama of width 16 + 2-layer CLIP vision tower of width
    16 on 336-pixel images), CLIP text (width 8), the 8x / 4x VAE of 4 latent channels, a 2 double- + 2 single-stream
    block transformer; ``latent_concat`` (2 x 4 + 1 mask input channels) or ``token_replace`` (4)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoImageToVideoPipeline
    from diffusers import HunyuanVideoTransformer3DModel
    from transformers import (
        CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, LlamaConfig, LlavaConfig,
        LlavaForConditionalGeneration,
    )

    from tiny_pipelines_hunyuan import _LLAMA_SPECIALS, WORDS, clip_tokenizer, hunyuan_video_vae, word_tokenizer

    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_image2video import DEFAULT_PROMPT_TEMPLATE

    template = DEFAULT_PROMPT_TEMPLATE["template"]
    tokenizer = word_tokenizer([template.format(" ".join(WORDS))], _LLAMA_SPECIALS + ["<image>"],
                               bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<pad>")
    # The pipeline's template as released: its system part is `crop_start` (103) tokens here too, BOS included, and
    # its `<image>` is token 5, which Llava expands to the 576 CLIP tokens of a 336-pixel image in 14-pixel patches.
    ids = tokenizer(template.format("fox")).input_ids
    assert ids.index(tokenizer.convert_tokens_to_ids("fox")) == DEFAULT_PROMPT_TEMPLATE["crop_start"]
    assert ids.index(tokenizer.convert_tokens_to_ids("<image>")) == DEFAULT_PROMPT_TEMPLATE["image_emb_start"]
    tokenizer_2 = clip_tokenizer()
    torch.manual_seed(seed)
    text_encoder = LlavaForConditionalGeneration(LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=336, patch_size=14, projection_dim=16),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32,
                                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=tokenizer.pad_token_id,
        image_seq_length=576, vision_feature_layer=-2, vision_feature_select_strategy="default",
    )).eval()
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer_2), hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()
    image_processor = CLIPImageProcessor(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    vae = hunyuan_video_vae(seed + 2)
    torch.manual_seed(seed + 3)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=9 if image_condition_type == "latent_concat" else 4, out_channels=4, num_attention_heads=2,
        attention_head_dim=8, num_layers=2, num_single_layers=2, num_refiner_layers=1, patch_size=2, patch_size_t=1,
        guidance_embeds=image_condition_type == "token_replace", text_embed_dim=16, pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 2), image_condition_type=image_condition_type,
    )
    return _eval(HunyuanVideoImageToVideoPipeline(
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        image_processor=image_processor))

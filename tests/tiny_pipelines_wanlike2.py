"""Tiny random pipelines of the AnyFlow, AnyFlow-FAR, Helios and Sana-Video families, built in the test process (no
download), and the end-to-end check they all share.

Every pipeline uses the tiny UMT5 / Gemma 2 text encoders and the tiny Wan VAE (16 latent channels, 8x spatial and 4x
temporal compression) of `tiny_pipelines`, and a transformer of 3 blocks, 2 heads x 8.
"""

import inspect

import numpy as np
import torch

from repvideo_diffusers import RepVideoConfig
from tiny_pipelines import t5, wan_vae


def require(*names: str) -> None:
    """Skip the calling test module when this diffusers release lacks one of the named classes (the package supports
    diffusers 0.40 to 0.42; these models arrived in 0.42)."""
    import diffusers
    import pytest

    missing = [name for name in names if not hasattr(diffusers, name)]
    if missing:
        pytest.skip(f"diffusers {diffusers.__version__} has no {', '.join(missing)}", allow_module_level=True)


def as_array(frames) -> np.ndarray:
    return frames.detach().float().cpu().numpy() if torch.is_tensor(frames) else np.asarray(frames)


def assert_repvideo_round_trip(pipe, generate) -> None:
    """Zero gates give the vanilla output bitwise, 0.6 gates change it, ``disable_repvideo`` restores it bitwise.

    ``generate(pipe)`` runs the pipeline with a fixed seed and returns what it made (latents or frames).
    """
    vanilla = as_array(generate(pipe))
    assert np.isfinite(vanilla).all()
    pipe.enable_repvideo(RepVideoConfig(gate_init=0.0))
    assert np.array_equal(as_array(generate(pipe)), vanilla)
    pipe.enable_repvideo(RepVideoConfig(gate_init=0.6))
    gated = as_array(generate(pipe))
    assert np.isfinite(gated).all() and np.abs(gated - vanilla).max() > 1e-4
    pipe.disable_repvideo()
    assert not hasattr(pipe.transformer, "repvideo_gates")
    assert np.array_equal(as_array(generate(pipe)), vanilla)


def pixel_video(frames: int, size: int, seed: int = 0) -> torch.Tensor:
    """A random video in [0, 1], ``(1, frames, 3, size, size)``."""
    return torch.rand(1, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


def pil_image(size: int, seed: int = 0):
    from PIL import Image

    pixels = torch.randint(0, 256, (size, size, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


# --- AnyFlow and AnyFlow-FAR --------------------------------------------------------------------------------------


def anyflow_transformer(seed: int = 2, num_layers: int = 3):
    from diffusers import AnyFlowTransformer3DModel

    torch.manual_seed(seed)
    return AnyFlowTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=num_layers, rope_max_seq_len=32,
    ).eval()


def anyflow_pipeline():
    from diffusers import AnyFlowPipeline, FlowMapEulerDiscreteScheduler

    tokenizer, text_encoder = t5(umt5=True)
    return AnyFlowPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=anyflow_transformer(),
                           vae=wan_vae(), scheduler=FlowMapEulerDiscreteScheduler())


def anyflow_far_transformer(seed: int = 3, num_layers: int = 3):
    from diffusers import AnyFlowFARTransformer3DModel

    torch.manual_seed(seed)
    # Three one-frame chunks with at most two at full resolution: the third chunk's KV cache holds the first chunk
    # FAR-compressed.
    return AnyFlowFARTransformer3DModel(
        patch_size=(1, 2, 2), compressed_patch_size=(1, 4, 4), full_chunk_limit=2, num_attention_heads=2,
        attention_head_dim=8, in_channels=16, out_channels=16, text_dim=16, freq_dim=16, ffn_dim=32,
        num_layers=num_layers, rope_max_seq_len=32, chunk_partition=(1, 1, 1),
    ).eval()


def anyflow_far_pipeline():
    from diffusers import AnyFlowFARPipeline, FlowMapEulerDiscreteScheduler

    tokenizer, text_encoder = t5(umt5=True)
    return AnyFlowFARPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=anyflow_far_transformer(),
                              vae=wan_vae(), scheduler=FlowMapEulerDiscreteScheduler())


def anyflow_frames(pipe, size: int = 16, **kwargs):
    """9 frames (3 latent frames) of ``size`` x ``size``, 3 flow-map steps, as latents."""
    return pipe("a fox in snow", num_inference_steps=3, num_frames=9, height=size, width=size,
                max_sequence_length=16, output_type="latent", generator=torch.Generator().manual_seed(0),
                **kwargs).frames


# --- Helios -------------------------------------------------------------------------------------------------------


def helios_transformer(seed: int = 4, num_layers: int = 3):
    from diffusers import HeliosTransformer3DModel

    torch.manual_seed(seed)
    return HeliosTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=num_layers, rope_dim=(4, 2, 2),
    ).eval()


def helios_pipeline(pyramid: bool = False):
    from diffusers import HeliosPipeline, HeliosPyramidPipeline, HeliosScheduler

    tokenizer, text_encoder = t5(umt5=True)
    components = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=wan_vae(), transformer=helios_transformer())
    if pyramid:  # three resolution stages, each halving the latent size of the next
        return HeliosPyramidPipeline(scheduler=HeliosScheduler(), **components)
    return HeliosPipeline(scheduler=HeliosScheduler(stages=1, stage_range=[0, 1]), **components)


def umt5_embeds(pipe, text: str, length: int = 16) -> torch.Tensor:
    """The UMT5 embeddings of ``text`` as the Wan-style pipelines make them (padding zeroed), computed here: the
    Helios pipelines clean prompts with ``ftfy`` unconditionally, which is no dependency of this project."""
    tokens = pipe.tokenizer([text], padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        embeds = pipe.text_encoder(tokens.input_ids, tokens.attention_mask).last_hidden_state
    return embeds * tokens.attention_mask.unsqueeze(-1)


def helios_frames(pipe, size: int = 32, **kwargs):
    """Two chunks of 2 latent frames (9 frames of ``size`` x ``size``) after a history of [2, 1, 1] latent frames,
    with classifier-free guidance, as latents."""
    call = dict(num_frames=9, height=size, width=size, history_sizes=[2, 1, 1], num_latent_frames_per_chunk=2,
                guidance_scale=2.0, output_type="latent", generator=torch.Generator().manual_seed(0),
                prompt_embeds=umt5_embeds(pipe, "a fox in snow"), negative_prompt_embeds=umt5_embeds(pipe, "blurry"))
    if "pyramid_num_inference_steps_list" not in inspect.signature(pipe.__call__).parameters:
        call["num_inference_steps"] = 2
    call.update(kwargs)
    return pipe(**call).frames


# --- Sana-Video ---------------------------------------------------------------------------------------------------


def gemma2(seed: int = 0):
    """(tokenizer, Gemma 2 text encoder of width 16): the tiny T5 tokenizer's vocabulary serves the model."""
    from transformers import Gemma2Config, Gemma2Model

    from repvideo_diffusers.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = Gemma2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                          num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
                          pad_token_id=0, eos_token_id=1, bos_token_id=1, sliding_window=16)
    return tokenizer, Gemma2Model(config).eval()


def sana_video_transformer(seed: int = 5, num_layers: int = 3):
    from diffusers import SanaVideoTransformer3DModel

    torch.manual_seed(seed)
    return SanaVideoTransformer3DModel(
        in_channels=16, out_channels=16, num_attention_heads=2, attention_head_dim=8, num_layers=num_layers,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16,
        patch_size=(1, 2, 2), rope_max_seq_len=32,
    ).eval()


def sana_video_pipeline(image_to_video: bool = False):
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        SanaImageToVideoPipeline,
        SanaVideoPipeline,
    )

    tokenizer, text_encoder = gemma2()
    components = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=wan_vae(),
                      transformer=sana_video_transformer())
    if image_to_video:
        return SanaImageToVideoPipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), **components)
    # The released text-to-video scheduler: DPM-Solver++ over flow sigmas.
    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return SanaVideoPipeline(scheduler=scheduler, **components)


def sana_video_frames(pipe, **kwargs):
    """9 frames (3 latent frames) of 32 x 32, 3 steps with guidance, as latents. No resolution binning (it would
    resize to the released 480p buckets) and no complex human instruction (a long chat preamble for the prompt)."""
    return pipe(prompt="a fox in snow", num_inference_steps=3, frames=9, height=32, width=32, guidance_scale=3.0,
                max_sequence_length=16, use_resolution_binning=False, complex_human_instruction=None,
                output_type="latent", generator=torch.Generator().manual_seed(0), **kwargs).frames


# --- Wan-Animate-2 (modular pipeline) -----------------------------------------------------------------------------


def wan_animate_2_transformer(seed: int = 6, num_layers: int = 3):
    """In: 16 noise + 20 conditioning channels (4 mask + 16 latent), as the released model; out: 16."""
    from diffusers import WanAnimate2Transformer3DModel

    torch.manual_seed(seed)
    return WanAnimate2Transformer3DModel(
        patch_size=(1, 2, 2), text_len=16, in_dim=36, dim=16, ffn_dim=32, freq_dim=16, text_dim=16, out_dim=16,
        num_heads=2, num_layers=num_layers, use_img_emb=True,
    ).eval()


def clip_vision(seed: int = 7):
    """A CLIP vision tower of width 1280 (the width the transformer's image projection takes), 2 layers, 224 x 224
    input (the pipeline resizes to it) in 16 patches."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=1280, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=224, patch_size=56)
    return CLIPVisionModel(config).eval()


def wan_animate_2_pipeline():
    """`WanAnimate2ModularPipeline` from its default blocks, with tiny components set in place (no download)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.modular_pipelines import WanAnimate2Blocks

    tokenizer, text_encoder = t5(umt5=True)
    pipe = WanAnimate2Blocks().init_pipeline()
    pipe.update_components(text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=clip_vision(),
                           vae=wan_vae(), transformer=wan_animate_2_transformer(),
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def wan_animate_2_frames(pipe):
    """A 32 x 32 character image animated by a 9-frame driving video: two segments of 5 frames (one carried over),
    2 steps each with classifier-free guidance (the guider's default), as pixels."""
    image = pil_image(32)
    driving_video = [pil_image(32, seed=seed) for seed in range(1, 10)]
    return pipe(prompt="a fox dancing", image=image, driving_video=driving_video, height=32, width=32,
                segment_frame_length=5, num_inference_steps=2, max_sequence_length=16,
                generator=torch.Generator().manual_seed(0), output_type="np", output="videos")

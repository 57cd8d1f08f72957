"""Tiny random pipelines of the Wan-like families (SkyReels-V2, Wan VACE, Wan Animate, ChronoEdit), built in the
test process without any download: UMT5 and the Wan VAE from `tiny_pipelines`, a CLIP vision encoder and its image
processor from tiny random configs.

These pipelines (unlike `WanPipeline`) call `ftfy.fix_text` on every prompt without checking that the optional
`ftfy` package is installed; `run` puts an identity stand-in in the pipeline's module for the call when it is not.

Image-conditioned checkpoints put the CLIP image tokens in front of the text and their attention processors split
them off by assuming 512 text tokens (hard-coded in diffusers), so their pipelines are called with
``max_sequence_length=512``.
"""

import contextlib
import sys
import types

import numpy as np
import PIL.Image
import torch

from tiny_pipelines import t5, wan_vae

TEXT = 512  # the text length the image-conditioned Wan processors assume


def clip_vision(seed: int = 4, projection: bool = False):
    """(CLIPImageProcessor of 32 x 32 images, CLIP vision encoder of width 16)."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, projection_dim=16)
    model = (CLIPVisionModelWithProjection if projection else CLIPVisionModel)(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return processor, model


def image(seed: int = 0, size: int = 16) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def video(frames: int, seed: int = 0, size: int = 16) -> list:
    return [image(seed * 100 + i, size) for i in range(frames)]


def _wan_kwargs(in_channels, **extra):
    return dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=in_channels,
                out_channels=16, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=3, rope_max_seq_len=32, **extra)


def _unipc():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=8.0)


def skyreels_v2_pipeline():
    from diffusers import SkyReelsV2Pipeline, SkyReelsV2Transformer3DModel

    tokenizer, text_encoder = t5(umt5=True)
    torch.manual_seed(2)
    transformer = SkyReelsV2Transformer3DModel(**_wan_kwargs(16))
    return SkyReelsV2Pipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=wan_vae(),
                              scheduler=_unipc())


def skyreels_v2_i2v_pipeline():
    """Image-to-video: 16 noise + 4 mask + 16 image-latent channels, CLIP tokens through added K/V projections."""
    from diffusers import SkyReelsV2ImageToVideoPipeline, SkyReelsV2Transformer3DModel

    tokenizer, text_encoder = t5(umt5=True)
    image_processor, image_encoder = clip_vision(projection=True)
    torch.manual_seed(2)
    transformer = SkyReelsV2Transformer3DModel(**_wan_kwargs(36, image_dim=16, added_kv_proj_dim=16))
    return SkyReelsV2ImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, image_encoder=image_encoder, image_processor=image_processor,
        transformer=transformer, vae=wan_vae(), scheduler=_unipc())


def skyreels_v2_df_pipeline():
    """Diffusion forcing: per-frame timesteps, fps conditioning (`inject_sample_info`)."""
    from diffusers import SkyReelsV2DiffusionForcingPipeline, SkyReelsV2Transformer3DModel

    tokenizer, text_encoder = t5(umt5=True)
    torch.manual_seed(2)
    transformer = SkyReelsV2Transformer3DModel(**_wan_kwargs(16, inject_sample_info=True))
    return SkyReelsV2DiffusionForcingPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer,
                                              vae=wan_vae(), scheduler=_unipc())


def wan_vace_pipeline():
    """VACE control channels: 2 x 16 latent channels of the (masked) control video + 8 x 8 mask channels."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel

    tokenizer, text_encoder = t5(umt5=True)
    torch.manual_seed(2)
    transformer = WanVACETransformer3DModel(**_wan_kwargs(16, vace_layers=[0, 2], vace_in_channels=96))
    return WanVACEPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=wan_vae(), transformer=transformer,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))


def wan_animate_pipeline():
    from diffusers import WanAnimatePipeline, WanAnimateTransformer3DModel

    tokenizer, text_encoder = t5(umt5=True)
    image_processor, image_encoder = clip_vision()
    torch.manual_seed(2)
    transformer = WanAnimateTransformer3DModel(
        **{**_wan_kwargs(36), "num_layers": 4}, latent_channels=16, image_dim=16, added_kv_proj_dim=16,
        motion_encoder_channel_sizes={"4": 8, "8": 8}, motion_encoder_size=8, motion_style_dim=8, motion_dim=4,
        motion_encoder_dim=8, face_encoder_hidden_dim=8, face_encoder_num_heads=2, inject_face_latents_blocks=2,
    )
    return WanAnimatePipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=wan_vae(), scheduler=_unipc(),
                              image_processor=image_processor, image_encoder=image_encoder, transformer=transformer)


def chronoedit_pipeline():
    """UniPC, as the released checkpoint: its temporal-reasoning mode trims the multistep solver's history."""
    from diffusers import ChronoEditPipeline, ChronoEditTransformer3DModel

    tokenizer, text_encoder = t5(umt5=True)
    image_processor, image_encoder = clip_vision()
    torch.manual_seed(2)
    transformer = ChronoEditTransformer3DModel(**_wan_kwargs(36, image_dim=16, added_kv_proj_dim=16))
    return ChronoEditPipeline(tokenizer=tokenizer, text_encoder=text_encoder, image_encoder=image_encoder,
                              image_processor=image_processor, transformer=transformer, vae=wan_vae(),
                              scheduler=_unipc())


def _latents(frames):
    return frames.detach().float().numpy() if torch.is_tensor(frames) else np.asarray(frames)


def _common(steps, seed, **kwargs):
    return dict(prompt="a fox in snow", num_inference_steps=steps, guidance_scale=1.0, output_type="latent",
                generator=torch.Generator().manual_seed(seed), **kwargs)


@contextlib.contextmanager
def ftfy_stand_in(pipe):
    """The pipeline's module gets ``ftfy.fix_text = identity`` for the duration, if it has no `ftfy`."""
    module = sys.modules[type(pipe).__module__]
    if hasattr(module, "ftfy"):
        yield
        return
    module.ftfy = types.SimpleNamespace(fix_text=lambda text: text)
    try:
        yield
    finally:
        del module.ftfy


def call_arguments(pipe, steps: int = 3, seed: int = 0, **overrides) -> dict:
    """The arguments of one tiny call of any pipeline of this file; ``overrides`` change or add some (a control
    video, another mode)."""
    name = type(pipe).__name__
    if name in ("SkyReelsV2Pipeline", "WanVACEPipeline"):
        call = _common(steps, seed, num_frames=5, height=16, width=16, max_sequence_length=16)
    elif name == "SkyReelsV2DiffusionForcingPipeline":
        # Asynchronous mode: 4 latent frames in causal blocks of 2 (block-causal attention mask), each block 2
        # steps behind the one before it (per-frame timesteps).
        call = _common(steps, seed, num_frames=13, height=16, width=16, max_sequence_length=16, base_num_frames=13,
                       ar_step=2, causal_block_size=2)
    elif name in ("SkyReelsV2ImageToVideoPipeline", "ChronoEditPipeline"):
        call = _common(steps, seed, image=image(), num_frames=5, height=16, width=16, max_sequence_length=TEXT)
    elif name == "WanAnimatePipeline":
        call = _common(steps, seed, image=image(), pose_video=video(5, 1), face_video=video(5, 2, size=8),
                       segment_frame_length=5, height=16, width=16, max_sequence_length=TEXT)
    else:
        raise ValueError(f"no tiny call for {name}")
    call.update(overrides)
    return call


def run(pipe, steps: int = 3, seed: int = 0, **overrides):
    """The denoised latents of one tiny call (what the transformer produces)."""
    with ftfy_stand_in(pipe):
        return _latents(pipe(**call_arguments(pipe, steps, seed, **overrides)).frames)


def assert_repvideo_round_trip(pipe, **overrides) -> None:
    """Zero gates: the very same latents; 0.6 gates: other latents; `disable_repvideo`: the same latents again."""
    from repvideo_diffusers import RepVideoConfig
    from repvideo_diffusers.families import get_transformer_blocks

    pipe.set_progress_bar_config(disable=True)
    vanilla = run(pipe, **overrides)
    gates = pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert gates.gate.numel() == len(get_transformer_blocks(pipe.transformer)) == len(pipe.transformer.blocks)
    assert np.array_equal(run(pipe, **overrides), vanilla)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert np.abs(run(pipe, **overrides) - vanilla).max() > 1e-4
    pipe.disable_repvideo()
    assert not hasattr(pipe.transformer, "repvideo_gates")
    assert np.array_equal(run(pipe, **overrides), vanilla)


def assert_generate_from_a_saved_folder(pipe, folder) -> None:
    """`repvideo generate --model <folder>` runs the saved pipeline with RepVideo and writes every frame."""
    from repvideo_diffusers.cli import main as cli_main
    from repvideo_diffusers.utils.video import read_video

    pipe.save_pretrained(folder / "model")
    out = folder / "video.mp4"
    with ftfy_stand_in(pipe):  # the module of the pipeline class, whichever instance `generate` loads
        assert cli_main(["generate", "a cat", "--model", str(folder / "model"), "--out", str(out), "--steps", "2",
                         "--frames", "5", "--height", "16", "--width", "16"]) == 0
    assert read_video(out)[0].shape == (5, 16, 16, 3)


def assert_analyze_reports(pipe, steps: int = 2, **overrides) -> None:
    """`repvideo_diffusers.analysis.analyze` runs the pipeline twice and reports per step and block (32 x 32 pixels:
    2 x 2 tokens per latent frame)."""
    from repvideo_diffusers import RepVideoConfig
    from repvideo_diffusers.analysis import analyze

    call = call_arguments(pipe, steps, **{"height": 32, "width": 32, **overrides})
    for name in ("prompt", "num_inference_steps", "output_type", "generator"):
        call.pop(name)
    blocks = len(pipe.transformer.blocks)
    with ftfy_stand_in(pipe):
        report = analyze(pipe, num_inference_steps=steps, gates=RepVideoConfig(window=2, gate_init=0.5),
                         progress=False, **call)
    for run in report["runs"].values():
        matrices = torch.tensor(run["attention_similarity"])
        assert matrices.shape == (steps, blocks, blocks)
        assert torch.equal(matrices.diagonal(dim1=1, dim2=2), torch.ones(steps, blocks, dtype=matrices.dtype))
        assert run["grid"][1:] == [2, 2]
    assert report["runs"]["repvideo"]["gates"] == [0.5] * blocks
    assert not hasattr(pipe.transformer, "repvideo_gates")  # the pipeline's state is restored

"""End to end: RepVideo on the image-to-video and video-to-video pipelines of CogVideoX, Wan, LTX-Video and
HunyuanVideo (tiny random pipelines built here, no download). Zero gates leave the denoised latents bitwise
unchanged, 0.6 gates change them, and `disable_repvideo` restores the original bitwise."""

import numpy as np
import pytest

import tiny_pipelines_i2v as tiny
from repvideo_diffusers import RepVideoConfig
from repvideo_diffusers.families import get_transformer_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BUILDERS = {
    "CogVideoXImageToVideoPipeline": tiny.cogvideox_i2v_pipeline,
    "CogVideoXVideoToVideoPipeline": tiny.cogvideox_v2v_pipeline,
    "WanImageToVideoPipeline-2.1": tiny.wan21_i2v_pipeline,
    "WanImageToVideoPipeline-2.2-TI2V": tiny.wan22_ti2v_pipeline,
    "WanVideoToVideoPipeline": tiny.wan_v2v_pipeline,
    "LTXImageToVideoPipeline": tiny.ltx_i2v_pipeline,
    "LTXConditionPipeline": tiny.ltx_condition_pipeline,
    "HunyuanVideoImageToVideoPipeline-latent_concat": lambda: tiny.hunyuan_i2v_pipeline("latent_concat"),
    "HunyuanVideoImageToVideoPipeline-token_replace": lambda: tiny.hunyuan_i2v_pipeline("token_replace"),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_repvideo_round_trip_on_image_and_video_conditioned_pipelines(name):
    pipe = BUILDERS[name]()
    assert type(pipe).__name__ == name.split("-")[0]
    pipe.set_progress_bar_config(disable=True)
    vanilla = tiny.run(pipe)
    assert np.isfinite(vanilla).all()

    gates = pipe.enable_repvideo(RepVideoConfig(gate_init=0.0))
    assert gates.gate.numel() == len(get_transformer_blocks(pipe.transformer))
    assert np.array_equal(tiny.run(pipe), vanilla)

    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert np.abs(tiny.run(pipe) - vanilla).max() > 1e-4

    pipe.disable_repvideo()
    assert not hasattr(pipe.transformer, "repvideo_gates")
    assert np.array_equal(tiny.run(pipe), vanilla)

"""`pipe.enable_repvideo()` on diffusers pipelines, gates in pipeline folders, and `repvideo generate`."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import CogVideoXPipeline

import repvideo_diffusers
from repvideo_diffusers import RepVideoConfig, RepVideoGates
from repvideo_diffusers.cli import main as cli_main
from repvideo_diffusers.utils.video import read_video


def frames(pipe, steps=2, seed=0):
    return pipe(
        "a panda playing guitar", num_inference_steps=steps, num_frames=9, guidance_scale=6.0,
        max_sequence_length=16, output_type="np", generator=torch.Generator().manual_seed(seed),
    ).frames


def test_every_diffusion_pipeline_gets_enable_and_disable():
    from diffusers import DiffusionPipeline, WanPipeline

    assert DiffusionPipeline.enable_repvideo is repvideo_diffusers.core.pipeline.enable_repvideo
    assert callable(WanPipeline.disable_repvideo)


def test_enable_then_disable_gives_the_original_pipeline_output_bitwise(tiny_pipe):
    vanilla = frames(tiny_pipe)
    gates = tiny_pipe.enable_repvideo()
    assert tiny_pipe.transformer.repvideo_gates is gates
    assert torch.equal(gates.gate, torch.full((4,), 0.5))  # default config: official initialisation
    assert np.abs(frames(tiny_pipe) - vanilla).max() > 1e-3  # untrained 0.5 gates change the output
    tiny_pipe.disable_repvideo()
    assert np.array_equal(frames(tiny_pipe), vanilla)


def test_identity_start_leaves_the_pipeline_output_unchanged(tiny_pipe):
    vanilla = frames(tiny_pipe)
    tiny_pipe.enable_repvideo(RepVideoConfig(gate_init=0.0))
    assert np.array_equal(frames(tiny_pipe), vanilla)


def test_enable_again_replaces_the_gates(tiny_pipe):
    tiny_pipe.enable_repvideo(RepVideoConfig(gate_init=0.3))
    second = tiny_pipe.enable_repvideo(RepVideoConfig(gate_init=0.0, window=2))
    assert tiny_pipe.transformer.repvideo_gates is second
    assert second.config.window == 2


def test_enable_with_bad_gates_keeps_the_gates_in_use(tiny_pipe, tmp_path):
    RepVideoGates(num_blocks=30, model_family="CogVideoX").save_pretrained(tmp_path)
    in_use = tiny_pipe.enable_repvideo(RepVideoConfig(gate_init=0.3))
    expected = frames(tiny_pipe)
    with pytest.raises(ValueError, match="30 blocks"):
        tiny_pipe.enable_repvideo(str(tmp_path))
    assert tiny_pipe.transformer.repvideo_gates is in_use
    assert np.array_equal(frames(tiny_pipe), expected)


@pytest.fixture
def pipeline_with_gates(tiny_pipeline_dir, tmp_path):
    """A copy of the tiny pipeline folder with trained-looking gates saved in repvideo/."""
    folder = tmp_path / "pipeline"
    shutil.copytree(tiny_pipeline_dir, folder)
    gates = RepVideoGates(num_blocks=4, window=2, model_family="CogVideoX")
    with torch.no_grad():
        gates.gate.copy_(torch.tensor([0.0, 0.0, 0.8, 0.4]))
    gates.save_pretrained(folder / "repvideo")
    return folder


def test_plain_enable_repvideo_loads_the_gates_saved_in_the_pipeline_folder(pipeline_with_gates):
    pipe = CogVideoXPipeline.from_pretrained(pipeline_with_gates)
    gates = pipe.enable_repvideo()
    assert gates.gate.tolist() == pytest.approx([0.0, 0.0, 0.8, 0.4])
    assert gates.config.window == 2


def test_saving_a_pipeline_with_repvideo_on_writes_clean_weights_and_repvideo_folder(tiny_pipe, tmp_path):
    from safetensors.torch import load_file

    vanilla = frames(tiny_pipe)
    gates = tiny_pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.35))
    expected = frames(tiny_pipe)
    tiny_pipe.save_pretrained(tmp_path / "saved")

    weights = load_file(tmp_path / "saved" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert not [key for key in weights if "repvideo" in key]  # transformer/ stays the base model
    assert tiny_pipe.transformer.repvideo_gates is gates  # still enabled after saving

    reloaded = CogVideoXPipeline.from_pretrained(tmp_path / "saved")
    assert np.array_equal(frames(reloaded), vanilla)
    reloaded.enable_repvideo()
    assert reloaded.transformer.repvideo_gates.config.window == 2
    assert np.array_equal(frames(reloaded), expected)


def test_apply_with_none_finds_gates_beside_a_transformer_loaded_on_its_own(pipeline_with_gates):
    from diffusers import CogVideoXTransformer3DModel

    transformer = CogVideoXTransformer3DModel.from_pretrained(pipeline_with_gates, subfolder="transformer")
    gates = repvideo_diffusers.apply_repvideo(transformer)
    assert gates.gate.tolist() == pytest.approx([0.0, 0.0, 0.8, 0.4])


def test_generate_writes_a_playable_mp4_with_the_requested_size(tmp_path, capsys):
    out = tmp_path / "panda.mp4"
    assert cli_main(["generate", "a panda playing guitar", "--out", str(out), "--steps", "2", "--frames", "17",
                     "--height", "48", "--width", "80", "--seed", "3"]) == 0
    video, fps = read_video(out)
    assert video.shape == (17, 48, 80, 3)
    assert fps == 8.0
    assert video.std() > 1.0  # a real picture, not a blank frame
    assert "with RepVideo" in capsys.readouterr().out


def test_generate_is_seeded_and_no_repvideo_changes_the_result(tmp_path):
    paths = {}
    for name, extra in (("a", []), ("b", []), ("base", ["--no-repvideo"])):
        paths[name] = tmp_path / f"{name}.mp4"
        assert cli_main(["generate", "a cat", "--out", str(paths[name]), "--steps", "2", *extra]) == 0
    a, b, base = (read_video(paths[k])[0].astype(int) for k in ("a", "b", "base"))
    assert np.array_equal(a, b)
    assert np.abs(a - base).max() > 0


def test_generate_loads_gates_from_a_local_pipeline_folder(pipeline_with_gates, tmp_path):
    out = tmp_path / "x.mp4"
    assert cli_main(["generate", "a cat", "--model", str(pipeline_with_gates), "--out", str(out), "--steps", "2",
                     "--frames", "9"]) == 0
    assert read_video(out)[0].shape == (9, 64, 96, 3)


# The bad-argument rows of `repvideo generate` (frames, model folder, steps, height, --gates with --no-repvideo)
# are in tests/test_cli_errors.py, with the rest of the command line's error policy.


def test_generate_routes_attention_to_sdpa_and_refuses_xformers_without_an_operator(tmp_path, capsys):
    out = tmp_path / "sdpa.mp4"
    assert cli_main(["generate", "a cat", "--out", str(out), "--steps", "1", "--attention", "sdpa"]) == 0
    assert "attention backend: sdpa" in capsys.readouterr().out
    assert read_video(out)[0].shape == (9, 64, 96, 3)
    if torch.cuda.is_available():
        pytest.skip("the xformers refusal is checked on machines without a CUDA device")
    refused = tmp_path / "xformers.mp4"
    assert cli_main(["generate", "a cat", "--out", str(refused), "--steps", "1", "--attention", "xformers"]) == 2
    assert "xformers" in capsys.readouterr().err
    assert not refused.exists()


def test_the_console_script_runs_the_main_job(tmp_path):
    out = tmp_path / "panda.mp4"
    result = subprocess.run(
        [sys.executable, "-m", "repvideo_diffusers", "generate", "a panda playing guitar", "--out", str(out),
         "--steps", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert read_video(out)[0].shape == (9, 64, 96, 3)

"""`repvideo compare`: the same prompt and seed without and with RepVideo, side by side, plus the per-frame
adjacent-frame similarity of both runs (issue 13, item 7)."""

import numpy as np
import pytest
import torch

from cli_checks import assert_refused
from repvideo_diffusers import RepVideoConfig, RepVideoGates
from repvideo_diffusers.analysis import analyze
from repvideo_diffusers.analysis import compare as compare_module
from repvideo_diffusers.analysis.compare import compare_videos
from repvideo_diffusers.cli import main
from repvideo_diffusers.tiny import TINY_FRAMES, TINY_HEIGHT, TINY_WIDTH
from repvideo_diffusers.utils.video import read_video

CALL = {"num_inference_steps": 2, "max_sequence_length": 16, "guidance_scale": 6.0}


def plain_run(pipe, seed=0):
    return pipe("a fox in snow", output_type="np", generator=torch.Generator().manual_seed(seed), **CALL).frames[0]


@pytest.fixture
def zero_gates(tmp_path):
    folder = tmp_path / "zero-gates"
    RepVideoGates(num_blocks=4, window=2, gate_init=0.0, model_family="CogVideoX").save_pretrained(folder)
    return folder


def test_compare_writes_a_double_width_video_and_the_figure(tmp_path, capsys):
    out = tmp_path / "cmp.mp4"
    assert main(["compare", "a fox in snow", "--out", str(out), "--steps", "1", "--device", "cpu"]) == 0
    frames, fps = read_video(out)
    assert frames.shape == (TINY_FRAMES, TINY_HEIGHT, 2 * TINY_WIDTH, 3)  # two tiny videos side by side
    assert fps == pytest.approx(8.0)
    figure = tmp_path / "cmp_frame_similarity.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"
    captured = capsys.readouterr()
    assert "compare: 100%" in captured.err  # the progress bar over both runs' steps
    assert "left without RepVideo, right with" in captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cmp.mp4", "cmp_frame_similarity.png"]  # nothing staged left


def test_compare_with_zero_gates_gives_identical_halves(tmp_path, zero_gates, monkeypatch):
    results = []
    original = compare_module.write_comparison
    monkeypatch.setattr(compare_module, "write_comparison", lambda result, *a, **k: results.append(result) or
                        original(result, *a, **k))
    out = tmp_path / "cmp.mp4"
    out.write_bytes(b"old")  # replaced: --overwrite
    assert main(["compare", "a fox", "--out", str(out), "--gates", str(zero_gates), "--steps", "1", "--overwrite",
                 "--device", "cpu"]) == 0
    (result,) = results
    assert result.gates == [0.0, 0.0, 0.0, 0.0]
    assert np.array_equal(result.base, result.repvideo)  # frame for frame
    assert result.base_similarity == result.repvideo_similarity
    assert read_video(out)[0].shape[2] == 2 * result.base.shape[2]


def test_compare_runs_equal_plain_runs_and_similarity_matches_analyze(tiny_pipe):
    vanilla = plain_run(tiny_pipe)
    gates = RepVideoConfig(window=2, gate_init=0.5)
    tiny_pipe.enable_repvideo(gates)
    with_repvideo = plain_run(tiny_pipe)
    in_use = tiny_pipe.enable_repvideo(RepVideoConfig(gate_init=0.3))

    result = compare_videos(tiny_pipe, "a fox in snow", gates=gates, seed=0, progress=False, **CALL)
    assert np.array_equal(result.base, vanilla)  # the reference: the pipeline without RepVideo
    assert np.array_equal(result.repvideo, with_repvideo)  # and with the same gates enabled by hand
    assert np.abs(result.base - result.repvideo).max() > 1e-3  # untrained 0.5 gates change the video
    assert tiny_pipe.transformer.repvideo_gates is in_use  # the pipeline's own gates are back

    # One value per latent frame pair; their mean is analyze's adjacent-frame similarity (mean over blocks, steps).
    latent_frames = (TINY_FRAMES - 1) // tiny_pipe.vae_scale_factor_temporal + 1
    assert len(result.base_similarity) == len(result.repvideo_similarity) == latent_frames - 1
    report = analyze(tiny_pipe, "a fox in snow", gates=gates, progress=False, **CALL)
    for label, values in (("base", result.base_similarity), ("repvideo", result.repvideo_similarity)):
        expected = np.mean(report["runs"][label]["frame_similarity"])
        assert np.mean(values) == pytest.approx(expected, abs=1e-9)
    assert result.base_similarity != result.repvideo_similarity


@pytest.mark.parametrize("existing", ["cmp.mp4", "cmp_frame_similarity.png"])
def test_compare_refuses_an_existing_output_without_overwrite(tmp_path, capsys, existing):
    (tmp_path / existing).write_bytes(b"keep me")
    assert_refused(["compare", "a fox", "--out", tmp_path / "cmp.mp4", "--steps", "1"],
                [existing, "already exists", "--overwrite"], capsys, watch=[tmp_path])


def test_compare_refuses_a_non_mp4_out_before_loading_anything(tmp_path, capsys):
    assert_refused(["compare", "--out", tmp_path / "cmp.gif"], ["--out", ".mp4"], capsys, watch=[tmp_path])

"""The paper's diagnostics (`repvideo_diffusers.analysis`, `repvideo analyze`): specifications with real numbers."""

import json
import os

import pytest
import torch

import repvideo_diffusers
from repvideo_diffusers import analysis
from repvideo_diffusers.analysis import (
    adjacent_frame_similarity,
    analyze,
    attention_similarity,
    diagnose_transformer,
    save_report,
)
from repvideo_diffusers.cli import main
from repvideo_diffusers.families import registered_families
from repvideo_diffusers.testing import TINY_MODELS

TINY_CALL = {"max_sequence_length": 16}


@pytest.fixture(scope="module")
def tiny_report(tiny_pipeline_dir):
    from diffusers import CogVideoXPipeline

    pipe = CogVideoXPipeline.from_pretrained(tiny_pipeline_dir)
    return analyze(pipe, "a fox in snow", num_inference_steps=2, progress=False, **TINY_CALL)


def test_attention_similarity_is_the_mean_row_cosine_in_range_with_unit_diagonal():
    generator = torch.Generator().manual_seed(0)
    maps = [torch.rand(2, 3, 50, generator=generator).softmax(-1) for _ in range(5)]
    maps[4] = -maps[0]  # anti-correlated: exercises the lower end of the range
    similarity = attention_similarity(maps)
    assert similarity.shape == (5, 5)
    assert torch.equal(similarity.diagonal(), torch.ones(5, dtype=similarity.dtype))
    assert similarity.min().item() >= -1.0 and similarity.max().item() <= 1.0
    assert similarity[0, 4].item() == pytest.approx(-1.0, abs=1e-12)
    direct = torch.nn.functional.cosine_similarity(maps[1].double(), maps[3].double(), dim=-1).mean()
    assert similarity[1, 3].item() == pytest.approx(direct.item(), abs=1e-12)
    assert torch.equal(similarity, similarity.T)


def test_adjacent_frame_similarity_equals_a_per_position_loop():
    generator = torch.Generator().manual_seed(1)
    t, h, w, channels = 4, 2, 3, 5
    features = torch.randn(2, t * h * w, channels, generator=generator)
    values = []
    for b in range(2):
        for frame in range(t - 1):
            for position in range(h * w):
                a = features[b, frame * h * w + position].double()
                c = features[b, (frame + 1) * h * w + position].double()
                values.append((a @ c / (a.norm() * c.norm())).item())
    assert adjacent_frame_similarity(features, (t, h, w)) == pytest.approx(sum(values) / len(values), abs=1e-10)


def test_adjacent_frame_similarity_refuses_one_frame_and_a_wrong_token_count():
    with pytest.raises(ValueError, match="at least 2 latent frames, got 1"):
        adjacent_frame_similarity(torch.randn(1, 6, 4), (1, 2, 3))
    with pytest.raises(ValueError, match="expected 2 x 2 x 3 = 12 video tokens from the block, found 10"):
        adjacent_frame_similarity(torch.randn(1, 10, 4), (2, 2, 3))


EXPECTED_GRIDS = {"CogVideoX": [3, 4, 6], "Wan": [3, 4, 4], "HunyuanVideo": [3, 4, 4], "LTX-Video": [3, 4, 4],
                  "Mochi": [3, 4, 4]}


@pytest.mark.parametrize("family", sorted(name for name, family in registered_families().items()
                                          if family.attention and family.tiny))
def test_diagnostics_of_one_forward_cover_every_block_of_every_family(family):
    transformer, inputs = TINY_MODELS[family].build()
    result = diagnose_transformer(transformer, **inputs)
    blocks = TINY_MODELS[family].num_blocks
    similarity = torch.tensor(result["attention_similarity"])
    assert similarity.shape == (blocks, blocks)
    assert torch.equal(similarity.diagonal(), torch.ones(blocks, dtype=similarity.dtype))
    assert -1.0 <= similarity.min().item() and similarity.max().item() <= 1.0
    assert similarity[0, 1].item() < 0.999  # random layers attend differently: the measure is not saturated
    frames = torch.tensor(result["frame_similarity"])
    assert frames.shape == (blocks,) and frames.abs().max().item() <= 1.0
    if family in EXPECTED_GRIDS:
        assert result["grid"] == EXPECTED_GRIDS[family]
    assert len(result["grid"]) == 3 and min(result["grid"]) >= 1


def test_analyze_reports_per_step_matrices_and_the_gates_for_both_runs(tiny_report):
    assert set(tiny_report["runs"]) == {"base", "repvideo"}
    for run in tiny_report["runs"].values():
        matrices = torch.tensor(run["attention_similarity"])
        assert matrices.shape == (2, 4, 4)  # steps x layers x layers
        assert torch.equal(matrices.diagonal(dim1=1, dim2=2), torch.ones(2, 4, dtype=matrices.dtype))
        assert -1.0 <= matrices.min().item() and matrices.max().item() <= 1.0
        assert torch.tensor(run["frame_similarity"]).shape == (2, 4)
        assert len(run["timesteps"]) == 2 and run["timesteps"][0] > run["timesteps"][1]
        assert run["query_tokens"] == [31, 55, 79] and run["grid"] == [3, 4, 6]
    assert tiny_report["runs"]["repvideo"]["gates"] == [0.5] * 4
    assert tiny_report["runs"]["repvideo"]["window"] == 6


def test_repvideo_changes_only_blocks_after_the_first_two_in_the_first_step(tiny_report):
    """Same seed, same first input: blocks 0 and 1 see a no-op blend, so their attention is identical in both runs;
    blocks 2 and 3 blend with the feature cache, so theirs changes."""
    base = torch.tensor(tiny_report["runs"]["base"]["attention_similarity"][0])
    rep = torch.tensor(tiny_report["runs"]["repvideo"]["attention_similarity"][0])
    assert (base[0, 1] - rep[0, 1]).abs().item() < 1e-9
    assert (base[2:, :] - rep[2:, :]).abs().max().item() > 1e-4
    base_frames = tiny_report["runs"]["base"]["frame_similarity"][0]
    rep_frames = tiny_report["runs"]["repvideo"]["frame_similarity"][0]
    assert base_frames[:2] == pytest.approx(rep_frames[:2], abs=1e-9)
    assert abs(base_frames[2] - rep_frames[2]) > 1e-6


def test_analyze_restores_the_pipelines_repvideo_state(tiny_pipe):
    gates = tiny_pipe.enable_repvideo(repvideo_diffusers.RepVideoConfig(window=2, gate_init=0.25))
    report = analyze(tiny_pipe, "a fox", num_inference_steps=1, progress=False, **TINY_CALL)
    assert tiny_pipe.transformer.repvideo_gates is gates
    assert report["runs"]["repvideo"]["gates"] == [0.25] * 4 and report["runs"]["repvideo"]["window"] == 2
    tiny_pipe.disable_repvideo()
    analyze(tiny_pipe, "a fox", num_inference_steps=1, runs=("repvideo",), progress=False, **TINY_CALL)
    assert not repvideo_diffusers.is_repvideo_applied(tiny_pipe.transformer)


def test_analyze_rejects_unknown_runs(tiny_pipe):
    with pytest.raises(ValueError, match=r"runs must name 'base' and/or 'repvideo', got \['cached'\]"):
        analyze(tiny_pipe, runs=("cached",))


def test_report_files_are_written_and_readable(tiny_report, tmp_path):
    import matplotlib.image

    paths = save_report(tiny_report, tmp_path / "report")
    assert sorted(p.name for p in paths) == ["analysis.json", "attention_similarity.png", "frame_similarity.png", "gates.png"]
    assert json.loads((tmp_path / "report" / "analysis.json").read_text()) == tiny_report
    for name in analysis.FIGURES:
        image = matplotlib.image.imread(tmp_path / "report" / name)
        assert image.shape[0] >= 300 and image.shape[1] >= 600  # big enough to read
        assert image[..., :3].std() > 0.05  # not blank
    assert os.listdir(tmp_path) == ["report"]  # no staging folder left behind


def test_a_failing_figure_leaves_no_half_written_report(tiny_report, tmp_path, monkeypatch):
    def broken(report, path):
        raise RuntimeError("disk full")

    monkeypatch.setattr(analysis.plots, "plot_gates", broken)  # save_report draws through the plots module
    with pytest.raises(RuntimeError, match="disk full"):
        save_report(tiny_report, tmp_path / "report")
    assert os.listdir(tmp_path) == []


def test_cli_analyze_writes_the_report_and_prints_the_summary(tiny_pipeline_dir, tmp_path, capsys):
    code = main(["analyze", "a fox", "--steps", "1", "--out", str(tmp_path / "out"), "--attention", "auto"])
    assert code == 0
    report = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert len(report["runs"]["base"]["attention_similarity"]) == 1
    printed = capsys.readouterr().out
    assert "attention backend: sdpa" in printed and "with RepVideo: cross-layer attention similarity" in printed


def test_cli_analyze_explains_bad_queries(tmp_path, capsys):
    assert main(["analyze", "--queries", "1,x", "--out", str(tmp_path / "out")]) == 2
    assert "--queries must be 'frames' or comma-separated token indices" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_analysis_notebook_runs_and_shows_three_figures(tiny_pipeline_dir, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # the kernel must import this checkout, offline, and find the tiny pipeline the tests already built
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    notebook = nbformat.read(os.path.join(root, "examples", "analysis.ipynb"), as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    errors = [output for output in outputs if output.output_type == "error"]
    assert errors == []
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) == 3
    text = "".join(output.get("text", "") for output in outputs)
    assert "attention backend: sdpa" in text and "mean_adjacent_frame_similarity" in text

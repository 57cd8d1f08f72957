"""`repvideo bench` smoke tests: the benchmark runs at tiny size and reports what it promises (no timing asserts).

The harness and the official-style baseline live in the checkout's benchmarks/ folder, not in the package: this
module puts that folder on ``sys.path`` (as the harness itself does for its siblings) and imports them by name.
"""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo
from repvideo_diffusers.cli import bench as cli_bench
from repvideo_diffusers.cli import main

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))

import bench_repvideo  # noqa: E402
from bench_repvideo import SIZES, build_transformer, run_benchmark, write_report  # noqa: E402
from official_style import apply_official_style  # noqa: E402


def test_official_style_baseline_computes_the_same_output_as_repvideo():
    # The baseline must do the same work to the same numbers, or beating it means nothing.
    transformer, inputs = build_transformer(SIZES["tiny"], torch.device("cpu"))
    config = RepVideoConfig(window=3, gate_init=0.5)
    with torch.no_grad():
        vanilla = transformer(**inputs, return_dict=False)[0]
        apply_repvideo(transformer, config)
        ours = transformer(**inputs, return_dict=False)[0]
        remove_repvideo(transformer)
        apply_official_style(transformer, config)
        official = transformer(**inputs, return_dict=False)[0]
        remove_repvideo(transformer)
    assert (ours - vanilla).abs().max() > 1e-3  # gates at 0.5 do change the output
    torch.testing.assert_close(official, ours, rtol=1e-5, atol=1e-5)


def test_bench_tiny_writes_json_and_png_with_positive_finite_ratios(tmp_path, capsys):
    assert main(["bench", "--size", "tiny", "--device", "cpu", "--repeats", "2", "--warmup", "0",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "bench-tiny.json").read_text())
    assert (tmp_path / "bench-tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(report["results"]) == {"vanilla", "repvideo", "official"}
    for variant in ("repvideo", "official"):
        ratios = report["ratios"][variant]
        for key in ("forward_time_ratio", "train_time_ratio", "forward_time_ratio_min", "train_time_ratio_min",
                    "forward_cpu_time_ratio", "train_cpu_time_ratio"):
            assert math.isfinite(ratios[key]) and ratios[key] > 0, (variant, key, ratios[key])
        assert 0 < ratios["per_block_hook_fraction"] < 1, ratios  # the hook's work is a fraction of a block's
        for key in ("forward_extra_memory_hidden_states", "train_extra_memory_hidden_states"):
            assert math.isfinite(ratios[key]), (variant, key, ratios[key])
    for result in report["results"].values():
        assert len(result["forward_seconds"]) == 2 and result["forward_peak_bytes"] > 0
    shapes = report["shapes"]
    assert report["hidden_state_bytes"] == 2 * (shapes["video_tokens"] + shapes["text_length"]) * shapes["width"] * 4
    assert "| repvideo |" in capsys.readouterr().out


def test_official_style_cache_holds_more_memory_than_the_running_mean():
    # Memory is counted exactly (bytes of live storages), so this holds on any machine: the official-style cache
    # keeps up to `window` block outputs plus their stack; the running mean keeps one tensor per stream.
    report = run_benchmark(size="tiny", device="cpu", repeats=1, warmup=0, train=False)
    ours = report["ratios"]["repvideo"]["forward_extra_memory_hidden_states"]
    official = report["ratios"]["official"]["forward_extra_memory_hidden_states"]
    assert ours <= 1.05, ours
    assert official >= 4.0, official
    # The official style stacks the cache before every block; the running mean allocates at most one blend per stream.
    assert report["ratios"]["official"]["forward_extra_allocations_per_block"] > \
        report["ratios"]["repvideo"]["forward_extra_allocations_per_block"]


def test_bench_rejects_unknown_size_and_output_file(tmp_path):
    with pytest.raises(ValueError, match="--size must be one of"):
        run_benchmark(size="huge")
    with pytest.raises(ValueError, match="needs a CUDA"):
        run_benchmark(size="2b", device="cpu")
    target = tmp_path / "file.json"
    target.write_text("keep me")
    with pytest.raises(ValueError, match="is a file"):
        write_report({"size": "tiny"}, target)
    assert target.read_text() == "keep me"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bench_tiny_on_cuda_measures_peak_memory_with_the_cuda_allocator():
    report = run_benchmark(size="tiny", device="cuda", repeats=2, warmup=1)
    assert report["machine"]["gpu"]
    for variant in ("repvideo", "official"):
        assert math.isfinite(report["ratios"][variant]["forward_time_ratio"])
    assert report["ratios"]["official"]["forward_extra_memory_hidden_states"] > \
        report["ratios"]["repvideo"]["forward_extra_memory_hidden_states"]


def test_bench_docstring_example_runs():
    # The harness is outside the package, so test_package's doctest sweep does not see it: run its Python block here.
    block = re.search(r"From Python.*?::\n\n((?:    .*\n)+)", bench_repvideo.__doc__).group(1)
    code = "\n".join(line[4:] for line in block.splitlines())
    assert "run_benchmark(" in code and "assert " in code
    exec(compile(code, "bench_repvideo docstring", "exec"), {})


def test_cli_sizes_are_the_harness_sizes():
    # `repvideo bench --help` must work without loading the harness, so the parser names the sizes itself.
    assert cli_bench.SIZE_NAMES == tuple(sorted(SIZES))


def test_cli_bench_uses_the_checkouts_harness():
    assert cli_bench.benchmarks_folder() == BENCHMARKS
    assert cli_bench.load_harness() is bench_repvideo


def test_cli_bench_refuses_an_output_file_before_measuring(tmp_path, capsys, monkeypatch):
    def measured(**kwargs):
        raise AssertionError("the benchmark ran before --out was checked")

    monkeypatch.setattr(bench_repvideo, "run_benchmark", measured)
    target = tmp_path / "file.json"
    target.write_text("keep me")
    assert main(["bench", "--size", "tiny", "--device", "cpu", "--out", str(target)]) == 2
    assert "is a file; pass a folder for the JSON and PNG results" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_cli_bench_without_a_checkout_says_what_is_missing_and_how_to_run_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_bench, "benchmarks_folder", lambda: tmp_path / "site-packages" / "benchmarks")
    assert main(["bench", "--size", "tiny", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "expected at" in error and "bench_repvideo.py" in error and "found no folder" in error
    assert "git clone" in error and "pip install -e ." in error and "python benchmarks/bench_repvideo.py" in error
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no bench_repvideo.py"):
        cli_bench.load_harness(tmp_path / "empty")


SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if 'if __name__ == "__main__":' in p.read_text())


def test_the_benchmark_scripts_are_the_expected_ones():
    assert SCRIPTS == ["attention_bench.py", "bench_cvvae.py", "bench_repvideo.py", "convert_memory.py", "train_step.py"]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_script_answers_help(script, monkeypatch):
    # The scripts must import this checkout (an editable install may point at another one).
    root = str(BENCHMARKS.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                            timeout=300, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout

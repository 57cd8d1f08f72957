"""`repvideo bench` smoke tests: the benchmark runs at tiny size and reports what it promises (no timing asserts)."""

import json
import math

import pytest
import torch

from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo
from repvideo_diffusers.bench import apply_official_style, build_transformer, run_benchmark, SIZES, write_report
from repvideo_diffusers.cli import main


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
    import doctest

    import repvideo_diffusers.bench as bench

    result = doctest.testmod(bench, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0

"""``repvideo bench``: what RepVideo costs, measured against the base model and the official-style feature cache.

    python benchmarks/bench_repvideo.py                 # CPU: medium size; CUDA: CogVideoX-2B shapes
    python benchmarks/bench_repvideo.py --size tiny     # seconds: the CI smoke run
    repvideo bench --size tiny                          # the same code, from a source checkout

Three variants of one randomly initialised CogVideoX transformer are measured in one run, interleaved repeat by
repeat so that drift of the machine (clock, other load) hits all of them alike:

* ``vanilla``: the base model.
* ``repvideo``: this package (running mean of the feature cache, one fused ``lerp`` per stream and block).
* ``official``: the official code's way (``official_style.py`` here): keep every cached block output in a list and
  recompute ``stack(cache).mean(0)`` before every block. It computes the same numbers and is the baseline to beat.

For each variant: transformer forward time (median after warm-up), forward + backward time of gates-only training
(base weights frozen; the latent input also requires grad so that every variant back-propagates through every
block, which keeps the three comparable) and the peak of memory allocated during each (see ``measuring.py``).
Memory is reported as *extra* over ``vanilla`` in units of one hidden-state tensor (all streams a block receives:
video + text tokens, batch, width, dtype), the unit the targets are stated in.

Sizes: ``tiny`` (CI smoke test, seconds), ``medium`` (default on CPU, a 10-block CogVideoX, width 256, 2 x 1,952
tokens), ``2b`` (CUDA: real CogVideoX-2B shapes, 30 blocks, width 1,920, 13 latent frames at 60x90, 226 text tokens,
CFG batch 2, bf16, gradient checkpointing for the training measurement).

From Python, with this folder on ``sys.path`` (tests/test_bench.py runs this block)::

    from bench_repvideo import run_benchmark
    report = run_benchmark(size="tiny", device="cpu", repeats=1, warmup=0, train=False)
    assert sorted(report["ratios"]) == ["official", "repvideo"]

This folder is not part of the installed package: the harness and the official-style baseline are measurement
tools, not library code. ``repvideo bench`` loads this file from the source checkout.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

# The sibling modules (official_style, measuring, bench_report) import by name, however this file was loaded: as a script,
# through `repvideo bench`, or from a test.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from bench_report import SMOKE_NOTE, check_out, format_report, plot_report, write_report  # noqa: E402, F401
from measuring import attach, count_allocations, peak_bytes, per_block_cost, synchronize  # noqa: E402
from repvideo_diffusers import remove_repvideo  # noqa: E402
from repvideo_diffusers.utils.dtypes import DTYPES, default_device  # noqa: E402

VARIANTS = ("vanilla", "repvideo", "official")


@dataclass(frozen=True)
class BenchSize:
    """Shapes of one benchmark size: a CogVideoX transformer and its input."""

    num_layers: int
    num_attention_heads: int
    attention_head_dim: int
    text_embed_dim: int
    latent_frames: int
    latent_height: int
    latent_width: int
    text_length: int
    batch_size: int  # 2 = classifier-free guidance
    dtype: str  # a key of repvideo_diffusers.utils.dtypes.DTYPES
    gradient_checkpointing: bool = False

    @property
    def width(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def video_tokens(self) -> int:
        return self.latent_frames * (self.latent_height // 2) * (self.latent_width // 2)  # patch size 2


SIZES: dict[str, BenchSize] = {
    "tiny": BenchSize(8, 2, 8, 16, 2, 8, 8, 8, 2, "fp32"),
    "medium": BenchSize(10, 4, 64, 256, 4, 40, 48, 32, 2, "fp32"),
    "2b": BenchSize(30, 30, 64, 4096, 13, 60, 90, 226, 2, "bf16", gradient_checkpointing=True),
}


def build_transformer(size: BenchSize, device: torch.device, seed: int = 0):
    """A CogVideoX transformer of the given shapes with random weights, and matching forward inputs."""
    from diffusers import CogVideoXTransformer3DModel

    dtype = DTYPES[size.dtype]
    torch.manual_seed(seed)
    with torch.device(device):  # initialise in place: a 2B model built on the CPU first takes minutes
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=size.num_attention_heads,
            attention_head_dim=size.attention_head_dim,
            in_channels=16,
            out_channels=16,
            text_embed_dim=size.text_embed_dim,
            num_layers=size.num_layers,
            sample_frames=(size.latent_frames - 1) * 4 + 1,
            sample_height=size.latent_height,
            sample_width=size.latent_width,
            max_text_seq_length=size.text_length,
        )
    if dtype != torch.float32:
        # nn.Module.to: CogVideoX keeps no module in float32, and ModelMixin.to would warn about exactly that.
        torch.nn.Module.to(transformer, dtype=dtype)
    transformer.eval().requires_grad_(False)
    generator = torch.Generator(device="cpu").manual_seed(seed + 1)

    def randn(*shape):
        return torch.randn(*shape, generator=generator).to(device=device, dtype=dtype)

    inputs = {
        "hidden_states": randn(size.batch_size, size.latent_frames, 16, size.latent_height, size.latent_width),
        "encoder_hidden_states": randn(size.batch_size, size.text_length, size.text_embed_dim),
        "timestep": torch.full((size.batch_size,), 500, device=device, dtype=torch.long),
    }
    return transformer, inputs


def _check_arguments(size: str, device: str | None, repeats: int | None, warmup: int) -> torch.device:
    """Every argument checked before anything is built; returns the device (default: CUDA when available)."""
    if size not in SIZES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}, got {size!r}.")
    device = torch.device(default_device(device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device} asked for CUDA but torch sees no GPU. Use --device cpu.")
    if size == "2b" and device.type != "cuda":
        raise ValueError(
            f"--size 2b builds CogVideoX-2B shapes (30 blocks, width 1920, 2 x 17,776 tokens, bf16) and needs a CUDA "
            f"GPU, got --device {device}. Use --size medium on a CPU."
        )
    if repeats is not None and repeats < 1:
        raise ValueError(f"--repeats must be a positive integer, got {repeats}.")
    if warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {warmup}.")
    return device


def _steps(transformer, inputs, train: bool) -> dict:
    """The measured calls: an inference forward and, with ``train``, forward + backward of gates-only training."""

    def forward():
        with torch.inference_mode():
            return transformer(**inputs, return_dict=False)[0]

    def forward_backward():
        latents = inputs["hidden_states"].detach().requires_grad_(True)
        output = transformer(**{**inputs, "hidden_states": latents}, return_dict=False)[0]
        output.float().square().mean().backward()

    return {"forward": forward, "train": forward_backward} if train else {"forward": forward}


def _memory(transformer, steps: dict, device, window, gate_init, warmup: int) -> tuple[dict, dict]:
    """Warm-up, then peak memory per variant and step and allocations of one forward, one variant at a time."""
    peaks = {variant: {} for variant in VARIANTS}
    allocations = {}
    for variant in VARIANTS:
        gates = attach(variant, transformer, window, gate_init)
        for name, step in steps.items():
            for _ in range(warmup):
                step()
            peaks[variant][name] = peak_bytes(step, device)
        allocations[variant] = count_allocations(steps["forward"])
        if gates is not None:
            remove_repvideo(transformer)
    return peaks, allocations


def _timings(transformer, steps: dict, device, window, gate_init, repeats: int, progress: bool):
    """Wall and process CPU seconds per variant and step, the variants interleaved repeat by repeat."""

    def timed(step):
        synchronize(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        synchronize(device)
        return time.perf_counter() - started, time.process_time() - cpu_started

    times = {variant: {name: [] for name in steps} for variant in VARIANTS}
    cpu_times = {variant: {name: [] for name in steps} for variant in VARIANTS}
    for repeat in range(repeats):
        for variant in VARIANTS:
            attach(variant, transformer, window, gate_init)
            for name, step in steps.items():
                wall, cpu = timed(step)
                times[variant][name].append(wall)
                cpu_times[variant][name].append(cpu)
            if variant != "vanilla":
                remove_repvideo(transformer)
        if progress:
            print(f"  repeat {repeat + 1}/{repeats} done", flush=True)
    return times, cpu_times


def _ratios(results: dict, steps, per_block: dict, num_layers: int, hidden_state_bytes: int) -> dict:
    """``repvideo`` and ``official`` against ``vanilla``: time, memory and allocation ratios."""
    ratios = {}
    base = results["vanilla"]
    for variant in ("repvideo", "official"):
        this = results[variant]
        ratios[variant] = {
            # Tensors allocated per block beyond the base model's, in one inference forward.
            "forward_extra_allocations_per_block":
                (this["forward_allocations"] - base["forward_allocations"]) / num_layers,
            "per_block_hook_fraction": per_block[variant]["fraction_of_block"],
        }
        for name in steps:
            ratios[variant][f"{name}_time_ratio"] = this[f"{name}_seconds_median"] / base[f"{name}_seconds_median"]
            # Best-of ratio: on a shared machine other load only ever adds time, so the minimum is the least noisy.
            ratios[variant][f"{name}_time_ratio_min"] = min(this[f"{name}_seconds"]) / min(base[f"{name}_seconds"])
            # CPU time of this process (all its threads): what other processes' load does not inflate as much.
            ratios[variant][f"{name}_cpu_time_ratio"] = statistics.median(this[f"{name}_cpu_seconds"]) / \
                statistics.median(base[f"{name}_cpu_seconds"])
            ratios[variant][f"{name}_extra_memory_hidden_states"] = (
                this[f"{name}_peak_bytes"] - base[f"{name}_peak_bytes"]
            ) / hidden_state_bytes
    return ratios


def run_benchmark(
    size: str = "medium",
    device: str | None = None,
    repeats: int | None = None,
    warmup: int = 2,
    window: int = 6,
    gate_init: float = 0.5,
    train: bool = True,
    progress: bool = False,
) -> dict:
    """Measure vanilla vs RepVideo vs the official-style cache; returns the report (also what the JSON holds).

    Args:
        size: ``"tiny"``, ``"medium"`` or ``"2b"`` (see `SIZES`).
        device: ``"cpu"``, ``"cuda"``, ... (default: CUDA when available).
        repeats: timed repeats per variant after ``warmup`` untimed ones (default 7).
        window, gate_init: the `RepVideoConfig` measured.
        train: also measure forward + backward of gates-only training.
    """
    device = _check_arguments(size, device, repeats, warmup)
    shapes = SIZES[size]
    repeats = repeats or 7
    transformer, inputs = build_transformer(shapes, device)
    if shapes.gradient_checkpointing and train:
        transformer.enable_gradient_checkpointing()
    steps = _steps(transformer, inputs, train)
    peaks, allocations = _memory(transformer, steps, device, window, gate_init, warmup)
    times, cpu_times = _timings(transformer, steps, device, window, gate_init, repeats, progress)
    per_block = per_block_cost(transformer, inputs, device, window, gate_init)
    element_size = torch.empty((), dtype=DTYPES[shapes.dtype]).element_size()
    hidden_state_bytes = shapes.batch_size * (shapes.video_tokens + shapes.text_length) * shapes.width * element_size
    results = {
        variant: {
            **{f"{name}_seconds_median": statistics.median(times[variant][name]) for name in steps},
            **{f"{name}_seconds": times[variant][name] for name in steps},
            **{f"{name}_cpu_seconds": cpu_times[variant][name] for name in steps},
            **{f"{name}_peak_bytes": peaks[variant][name] for name in steps},
            "forward_allocations": allocations[variant],
        }
        for variant in VARIANTS
    }
    return {
        "size": size,
        "shapes": {**asdict(shapes), "width": shapes.width, "video_tokens": shapes.video_tokens},
        "repvideo_config": {"window": window, "gate_init": gate_init},
        "machine": _machine(device),
        "repeats": repeats,
        "warmup": warmup,
        "hidden_state_bytes": hidden_state_bytes,
        "results": results,
        "ratios": _ratios(results, steps, per_block, shapes.num_layers, hidden_state_bytes),
        "per_block": per_block,
        **({"note": SMOKE_NOTE} if size == "tiny" else {}),
    }


def _machine(device: torch.device) -> dict:
    info = {
        "device": str(device),
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run(args) -> int:
    """Run the benchmark for parsed ``repvideo bench`` arguments, write the results and print the table.

    Every argument and the output paths are checked before anything is measured.
    """
    from repvideo_diffusers.cli._common import resolve_device

    device = resolve_device(args.device)
    size = args.size or ("2b" if device.startswith("cuda") else "medium")
    _check_arguments(size, device, args.repeats, args.warmup)
    check_out(args.out, size, getattr(args, "overwrite", False))
    print(f"repvideo bench: size {size} on {device} ({torch.get_num_threads()} threads)", flush=True)
    report = run_benchmark(size=size, device=device, repeats=args.repeats, warmup=args.warmup,
                           window=args.window, train=not args.no_train, progress=True)
    json_path, png_path = write_report(report, args.out, overwrite=True)  # checked above, before measuring
    print(format_report(report))
    print(f"wrote {json_path} and {png_path}")
    return 0


def main(argv=None) -> int:
    import argparse

    from repvideo_diffusers.cli.bench import add_arguments  # the flags of `repvideo bench`, defined once

    parser = argparse.ArgumentParser(prog="bench_repvideo", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as error:
        print(f"bench_repvideo: error: {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())

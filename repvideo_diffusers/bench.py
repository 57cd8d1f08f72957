"""``repvideo bench``: what RepVideo costs, measured against the base model and the official-style feature cache.

Three variants of one randomly initialised CogVideoX transformer are measured in one run, interleaved repeat by
repeat so that drift of the machine (clock, other load) hits all of them alike:

* ``vanilla``: the base model.
* ``repvideo``: this package (running mean of the feature cache, one fused ``lerp`` per stream and block).
* ``official``: the official code's way (arXiv 2501.08994, github.com/Vchitect/RepVideo): keep every cached block
  output in a list and recompute ``stack(cache).mean(0)`` before every block, blend with ``g*m + (1-g)*h``.
  It computes the same numbers and is the baseline to beat.

For each variant: transformer forward time (median after warm-up), forward + backward time of gates-only training
(base weights frozen; the latent input also requires grad so that every variant back-propagates through every
block, which keeps the three comparable) and the peak of memory allocated during each. Memory is reported as
*extra* over ``vanilla`` in units of one hidden-state tensor (all streams a block receives: video + text tokens,
batch, width, dtype), the unit the targets are stated in.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on CPU a ``TorchDispatchMode`` that adds up the bytes of
every storage created during the call and subtracts them when the storage is freed (``tracemalloc`` and RSS do not
see torch's allocator reliably).

Sizes: ``tiny`` (CI smoke test, seconds), ``medium`` (default on CPU, a 10-block CogVideoX, width 256, 2 x 1,952
tokens), ``2b`` (CUDA: real CogVideoX-2B shapes, 30 blocks, width 1,920, 13 latent frames at 60x90, 226 text tokens,
CFG batch 2, bf16, gradient checkpointing for the training measurement).

Example:
    ```python
    >>> from repvideo_diffusers.bench import run_benchmark
    >>> report = run_benchmark(size="tiny", device="cpu", repeats=1, warmup=0, train=False)
    >>> sorted(report["ratios"])
    ['official', 'repvideo']

    ```

Command line: ``repvideo bench --size medium --out bench-results`` or ``python benchmarks/bench_repvideo.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

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
    dtype: str
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
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def build_transformer(size: BenchSize, device: torch.device, seed: int = 0):
    """A CogVideoX transformer of the given shapes with random weights, and matching forward inputs."""
    from diffusers import CogVideoXTransformer3DModel

    dtype = _DTYPES[size.dtype]
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


# --- the official-style baseline -------------------------------------------------------------------------------


def _official_hook_class():
    from .core.hooks import RepVideoBlockHook

    class OfficialStyleBlockHook(RepVideoBlockHook):
        """The official code's feature cache: a list of block outputs, ``stack(cache).mean(0)`` before every block.

        The cache list lives in the shared state's ``means`` slot (reset to ``None`` at every forward call), so the
        core's forward hooks and activation-checkpointing wrapper drive it unchanged.
        """

        def blend_inputs(self, args, kwargs):
            state = self.state
            streams = [self._get(args, kwargs, i) for i in range(len(self.argument_names))]
            if state.means is None:
                state.means = [tuple(streams)]  # the cache starts with the embedded input
            gate = self.gates.gate[self.index]
            for position, stream in enumerate(streams):
                mean = torch.stack([cached[position] for cached in state.means]).mean(0)
                weight = gate.to(device=stream.device, dtype=stream.dtype)
                args, kwargs = self._set(args, kwargs, position, weight * mean + (1 - weight) * stream)
            return args, kwargs

        def update_cache(self, output):
            outputs = self.outputs_of(output)
            if self.index % self.window == 0:
                self.state.means = [outputs]
            else:
                self.state.means.append(outputs)

    return OfficialStyleBlockHook


def apply_official_style(transformer, config=None):
    """Attach RepVideo with the official-style feature cache instead of the running mean (benchmark baseline).

    Same gates, same numbers as `apply_repvideo` up to rounding; undo with `remove_repvideo`.
    """
    from .core.hooks import _BLOCK_HOOK, _STATE_ATTRIBUTE, apply_repvideo
    from .families import get_transformer_blocks

    gates = apply_repvideo(transformer, config)
    attachment = getattr(transformer, _STATE_ATTRIBUTE)
    hook_class = _official_hook_class()
    for block in get_transformer_blocks(transformer):
        core_hook = attachment.hooks[id(block)]
        hook = hook_class(core_hook.index, core_hook.window, gates, attachment.state, type(block),
                          core_hook.block_list)
        registry = block._diffusers_hook
        registry.remove_hook(_BLOCK_HOOK, recurse=False)
        registry.register_hook(hook, _BLOCK_HOOK)
        attachment.hooks[id(block)] = hook
    return gates


# --- measuring -------------------------------------------------------------------------------------------------


class _LiveStorageBytes:
    """Peak bytes of tensor storages created while active (CPU stand-in for ``torch.cuda.max_memory_allocated``)."""

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for tensor in tree_flatten(out)[0]:
                    if isinstance(tensor, torch.Tensor):
                        tracker._track(tensor.untyped_storage())
                return out

        self._mode = _Mode()
        self.live: dict[int, int] = {}
        self.current = self.peak = self.allocations = 0

    def _track(self, storage):
        key = storage.data_ptr()
        if key and key not in self.live:
            self.live[key] = storage.nbytes()
            self.allocations += 1
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)

    def _free(self, key):
        self.current -= self.live.pop(key, 0)

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def _synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _count_allocations(step: Callable[[], Any]) -> int:
    """How many tensor storages one call creates (every op's fresh output; in-place ops create none)."""
    with _LiveStorageBytes() as tracker:
        step()
    return tracker.allocations


def _peak_bytes(step: Callable[[], Any], device: torch.device) -> int:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - baseline
    with _LiveStorageBytes() as tracker:
        step()
    return tracker.peak


def _best_time(function: Callable[[], Any], device: torch.device, repeats: int) -> float:
    function()
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        started = time.perf_counter()
        function()
        _synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def _per_block_cost(transformer, inputs, device, window, gate_init, repeats: int = 30) -> dict:
    """Best-of time of the hook's own work at one block (blend + cache update), as a fraction of that block's forward.

    Short calls timed many times and the minimum kept: unlike whole-forward ratios this stays readable on a machine
    shared with other jobs. Measured at the middle of a cache window (the cache holds ``window // 2`` outputs).
    """
    from .core.hooks import _STATE_ATTRIBUTE, remove_repvideo
    from .families import get_transformer_blocks

    blocks = get_transformer_blocks(transformer)
    index = min(len(blocks) - 1, window // 2 + 1) if window > 2 else len(blocks) - 1
    block = blocks[index]
    captured = {}
    handle = block.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(args=args, kwargs=kwargs), with_kwargs=True
    )
    with torch.inference_mode():
        transformer(**inputs, return_dict=False)
    handle.remove()
    args, kwargs = captured["args"], captured["kwargs"]
    with torch.inference_mode():
        block_seconds = _best_time(lambda: block(*args, **kwargs), device, max(3, repeats // 3))
    costs = {}
    for variant in ("repvideo", "official"):
        _attach(variant, transformer, window, gate_init)
        hook = getattr(transformer, _STATE_ATTRIBUTE).hooks[id(block)]
        state = hook.state
        streams = tuple(hook._get(args, kwargs, i) for i in range(len(hook.argument_names)))
        cached = max(2, window // 2)

        def hook_work():
            # The cache as it stands mid-window: a running mean of our own (`repvideo`) or a list (`official`).
            state.start()
            state.count = cached
            if variant == "repvideo":
                state.means, state.owned = tuple(s.clone() for s in streams), True
            else:
                state.means = [tuple(s.clone() for s in streams) for _ in range(cached)]
            fresh = tuple(s.clone() for s in streams)  # the block's input, as a tensor the hook may blend in place
            new_args, new_kwargs = args, kwargs
            for position, stream in enumerate(fresh):
                new_args, new_kwargs = hook._set(new_args, new_kwargs, position, stream)
            _synchronize(device)
            started = time.perf_counter()
            hook.blend_inputs(new_args, new_kwargs)
            hook.update_cache(streams if hook.output_indices is not None else streams[0])
            _synchronize(device)
            return time.perf_counter() - started

        with torch.inference_mode():
            hook_work()
            best = min(hook_work() for _ in range(repeats))
        state.stop()
        remove_repvideo(transformer)
        costs[variant] = {"hook_seconds": best, "fraction_of_block": best / block_seconds}
    return {"block_index": index, "block_seconds": block_seconds, **costs}


def _attach(variant: str, transformer, window: int, gate_init: float):
    from .core import RepVideoConfig, apply_repvideo

    config = RepVideoConfig(window=window, gate_init=gate_init)
    if variant == "repvideo":
        return apply_repvideo(transformer, config)
    if variant == "official":
        return apply_official_style(transformer, config)
    return None


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
        repeats: timed repeats per variant after ``warmup`` untimed ones (default 7, 3 for ``2b`` training).
        window, gate_init: the `RepVideoConfig` measured.
        train: also measure forward + backward of gates-only training.
    """
    from .core import remove_repvideo

    if size not in SIZES:
        raise ValueError(f"--size must be one of {', '.join(SIZES)}, got {size!r}.")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
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
    shapes = SIZES[size]
    repeats = repeats or 7
    transformer, inputs = build_transformer(shapes, device)
    if shapes.gradient_checkpointing and train:
        transformer.enable_gradient_checkpointing()

    def forward():
        with torch.inference_mode():
            return transformer(**inputs, return_dict=False)[0]

    def forward_backward():
        latents = inputs["hidden_states"].detach().requires_grad_(True)
        output = transformer(**{**inputs, "hidden_states": latents}, return_dict=False)[0]
        output.float().square().mean().backward()

    steps = {"forward": forward}
    if train:
        steps["train"] = forward_backward

    def timed(step):
        _synchronize(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        step()
        _synchronize(device)
        return time.perf_counter() - started, time.process_time() - cpu_started

    times = {variant: {name: [] for name in steps} for variant in VARIANTS}
    cpu_times = {variant: {name: [] for name in steps} for variant in VARIANTS}
    peaks = {variant: {} for variant in VARIANTS}
    allocations = {}
    for variant in VARIANTS:  # warm-up and memory, one variant at a time
        gates = _attach(variant, transformer, window, gate_init)
        for name, step in steps.items():
            for _ in range(warmup):
                step()
            peaks[variant][name] = _peak_bytes(step, device)
        allocations[variant] = _count_allocations(forward)
        if gates is not None:
            remove_repvideo(transformer)
    for repeat in range(repeats):  # timing, interleaved
        for variant in VARIANTS:
            _attach(variant, transformer, window, gate_init)
            for name, step in steps.items():
                wall, cpu = timed(step)
                times[variant][name].append(wall)
                cpu_times[variant][name].append(cpu)
            if variant != "vanilla":
                remove_repvideo(transformer)
        if progress:
            print(f"  repeat {repeat + 1}/{repeats} done", flush=True)

    per_block = _per_block_cost(transformer, inputs, device, window, gate_init)
    element_size = torch.empty((), dtype=_DTYPES[shapes.dtype]).element_size()
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
    ratios = {}
    for variant in ("repvideo", "official"):
        ratios[variant] = {
            # Tensors allocated per block beyond the base model's, in one inference forward.
            "forward_extra_allocations_per_block": (allocations[variant] - allocations["vanilla"]) / shapes.num_layers,
            "per_block_hook_fraction": per_block[variant]["fraction_of_block"],
        }
        for name in steps:
            base, this = results["vanilla"], results[variant]
            ratios[variant][f"{name}_time_ratio"] = this[f"{name}_seconds_median"] / base[f"{name}_seconds_median"]
            # Best-of ratio: on a shared machine other load only ever adds time, so the minimum is the least noisy.
            ratios[variant][f"{name}_time_ratio_min"] = min(this[f"{name}_seconds"]) / min(base[f"{name}_seconds"])
            # CPU time of this process (all its threads): what other processes' load does not inflate as much.
            ratios[variant][f"{name}_cpu_time_ratio"] = statistics.median(this[f"{name}_cpu_seconds"]) / \
                statistics.median(base[f"{name}_cpu_seconds"])
            ratios[variant][f"{name}_extra_memory_hidden_states"] = (
                this[f"{name}_peak_bytes"] - base[f"{name}_peak_bytes"]
            ) / hidden_state_bytes
    return {
        "size": size,
        "shapes": {**asdict(shapes), "width": shapes.width, "video_tokens": shapes.video_tokens},
        "repvideo_config": {"window": window, "gate_init": gate_init},
        "machine": _machine(device),
        "repeats": repeats,
        "warmup": warmup,
        "hidden_state_bytes": hidden_state_bytes,
        "results": results,
        "ratios": ratios,
        "per_block": per_block,
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


def format_report(report: dict) -> str:
    """The ratios as a markdown table (what the CLI prints and the README quotes)."""
    steps = [name for name in ("forward", "train") if f"{name}_time_ratio" in report["ratios"]["repvideo"]]
    lines = [
        f"RepVideo benchmark, size {report['size']} on {report['machine'].get('gpu', report['machine']['device'])} "
        f"({report['machine']['cpu_threads']} threads, load {report['machine']['load_average_1min']}), "
        f"median and best of {report['repeats']}; "
        f"memory in hidden-state tensors of {report['hidden_state_bytes'] / 2**20:.1f} MiB",
        "",
        "| variant | " + " | ".join(f"{n} time ratio (median / best / process CPU) | {n} extra memory" for n in steps)
        + " | extra allocations per block | hook work per block (best-of) |",
        "|---|" + "---|---|" * len(steps) + "---|---|",
    ]
    for variant in ("repvideo", "official"):
        cells = []
        for name in steps:
            r = report["ratios"][variant]
            cells += [f"{r[f'{name}_time_ratio']:.3f} / {r[f'{name}_time_ratio_min']:.3f} / "
                      f"{r[f'{name}_cpu_time_ratio']:.3f}",
                      f"{r[f'{name}_extra_memory_hidden_states']:.2f}"]
        cells.append(f"{report['ratios'][variant]['forward_extra_allocations_per_block']:.2f}")
        cells.append(f"{report['ratios'][variant]['per_block_hook_fraction'] * 100:.2f}% of a block")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    base = report["results"]["vanilla"]
    lines.append("")
    lines.append(
        "vanilla: " + ", ".join(f"{n} {base[f'{n}_seconds_median'] * 1e3:.1f} ms" for n in steps)
        + ", " + ", ".join(f"{n} peak {base[f'{n}_peak_bytes'] / 2**20:.0f} MiB" for n in steps)
    )
    return "\n".join(lines)


def plot_report(report: dict, path: str | os.PathLike) -> None:
    """Bar chart: time ratios and extra memory of `repvideo` and `official` against `vanilla`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [name for name in ("forward", "train") if f"{name}_time_ratio" in report["ratios"]["repvideo"]]
    figure, (ax_time, ax_memory) = plt.subplots(1, 2, figsize=(9, 3.6))
    width = 0.38
    for offset, variant in zip((-width / 2, width / 2), ("repvideo", "official")):
        ratios = report["ratios"][variant]
        x = [i + offset for i in range(len(steps))]
        ax_time.bar(x, [ratios[f"{n}_time_ratio"] for n in steps], width, label=f"{variant} (median)", alpha=0.5)
        ax_time.scatter(x, [ratios[f"{n}_time_ratio_min"] for n in steps], marker="_", s=400, color="black",
                        label="best-of" if variant == "official" else None)
        ax_memory.bar(x, [ratios[f"{n}_extra_memory_hidden_states"] for n in steps], width, label=variant)
    ax_time.axhline(1.0, color="black", linewidth=0.8)
    ax_time.set_ylabel("time / vanilla")
    ax_memory.set_ylabel("extra peak memory (hidden-state tensors)")
    for axis in (ax_time, ax_memory):
        axis.set_xticks(range(len(steps)), steps)
        axis.legend()
    device = report["machine"].get("gpu", report["machine"]["device"])
    figure.suptitle(f"RepVideo cost, {report['size']} size on {device}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(report: dict, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``bench-<size>.json`` and ``bench-<size>.png`` into ``out_dir`` (via a temp folder, then moved)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; pass a folder for the JSON and PNG results.")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".bench-", dir=out_dir))
    try:
        name = f"bench-{report['size']}"
        (staging / f"{name}.json").write_text(json.dumps(report, indent=2))
        plot_report(report, staging / f"{name}.png")
        paths = []
        for suffix in (".json", ".png"):
            os.replace(staging / f"{name}{suffix}", out_dir / f"{name}{suffix}")
            paths.append(out_dir / f"{name}{suffix}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paths[0], paths[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=sorted(SIZES), default=None,
                        help="tiny (smoke test), medium (default on CPU), 2b (default on CUDA: CogVideoX-2B shapes)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 7)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up calls per variant (default 2)")
    parser.add_argument("--window", type=int, default=6, help="feature-cache window (default 6)")
    parser.add_argument("--no-train", action="store_true", help="skip the forward + backward measurement")
    parser.add_argument("--out", default="bench-results", help="folder for bench-<size>.json/.png")


def run(args: argparse.Namespace) -> int:
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    size = args.size or ("2b" if device.startswith("cuda") else "medium")
    print(f"repvideo bench: size {size} on {device} ({torch.get_num_threads()} threads)", flush=True)
    report = run_benchmark(size=size, device=device, repeats=args.repeats, warmup=args.warmup,
                           window=args.window, train=not args.no_train, progress=True)
    json_path, png_path = write_report(report, args.out)
    print(format_report(report))
    print(f"wrote {json_path} and {png_path}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure RepVideo's cost against the base model and the official-style cache",
        description="Forward time, gates-only training time and peak memory of a CogVideoX transformer: vanilla, "
        "with RepVideo, and with the official-style feature cache (stack + mean at every block). Writes JSON and "
        "a PNG chart, prints the ratios.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench_repvideo", description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"bench_repvideo: error: {error}")
        return 2

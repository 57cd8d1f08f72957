"""``repvideo bench``: the parser, and a `run` that loads the benchmark harness from the source checkout.

The harness (``benchmarks/bench_repvideo.py``) and the official-style baseline it measures against are measurement
tools, not library code, so they are not installed with the package: this command runs them from a clone.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from ._common import add_out_argument, add_parser, positive

HARNESS = "bench_repvideo.py"
SIZE_NAMES = ("2b", "medium", "tiny")  # the harness's SIZES; tests/test_bench.py checks the two agree


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``repvideo bench`` (also ``python benchmarks/bench_repvideo.py``)."""
    parser.add_argument("--size", choices=SIZE_NAMES, default=None,
                        help="tiny (smoke test), medium (default on CPU), 2b (default on CUDA: CogVideoX-2B shapes)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when a GPU is visible, else cpu)")
    parser.add_argument("--repeats", type=positive(int), default=None, help="timed repeats per variant (default 7)")
    parser.add_argument("--warmup", type=positive(int, allow_zero=True), default=2,
                        help="untimed warm-up calls per variant (default 2)")
    parser.add_argument("--window", type=positive(int), default=6, help="feature-cache window (default 6)")
    parser.add_argument("--no-train", action="store_true", help="skip the forward + backward measurement")
    add_out_argument(parser, "folder for bench-<size>.json and bench-<size>.png; other files in it stay "
                     "(default: bench-results)", default="bench-results")


def register(subparsers) -> None:
    parser = add_parser(
        subparsers, "bench",
        help="measure RepVideo's cost against the base model and the official-style cache",
        description="Forward time, gates-only training time and peak memory of a CogVideoX transformer: vanilla, "
        "with RepVideo, and with the official-style feature cache (stack + mean at every block). Writes JSON and "
        "a PNG chart, prints the ratios.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def benchmarks_folder() -> Path:
    """Where a source checkout keeps the benchmarks: beside the package folder."""
    import repvideo_diffusers

    return Path(repvideo_diffusers.__file__).resolve().parents[1] / "benchmarks"


def load_harness(folder: Path | None = None):
    """Import ``benchmarks/bench_repvideo.py`` of the source checkout (once; a second call returns the same module)."""
    folder = benchmarks_folder() if folder is None else Path(folder)
    path = folder / HARNESS
    if not path.is_file():
        found = f"{folder} has no {HARNESS}" if folder.is_dir() else f"no folder {folder}"
        raise ValueError(
            f"repvideo bench runs the benchmark harness of a source checkout, expected at {path}, but found {found} "
            "(an installed wheel ships the package only). Run it from a clone of the repository: "
            "`git clone <repository URL> && cd <clone> && pip install -e . && repvideo bench`, "
            f"or `python benchmarks/{HARNESS}` there."
        )
    name = path.stem
    loaded = sys.modules.get(name)
    if loaded is not None and Path(getattr(loaded, "__file__", "")).resolve() == path:
        return loaded  # already imported from this file (a test, or an earlier call)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before running it: dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def run(args: argparse.Namespace) -> int:
    return load_harness().run(args)

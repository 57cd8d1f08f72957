"""Peak memory and time of `repvideo convert` on a full-size synthetic CogVideoX-2B RepVideo SAT checkpoint.

Builds a SAT checkpoint with the official 2B shapes (30 layers, width 1920, random fp16 weights, ~3.4 GB, the gates
set to 0.5), converts it in a child process and reports the child's peak resident memory as a ratio to the
checkpoint size, plus how much of it was anonymous memory (allocated) versus pages of the memory-mapped input
file, which the kernel can drop at any time. Nothing here is a test; run it by hand:

    python benchmarks/convert_memory.py [--workdir /tmp] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def build_synthetic_2b(folder: Path) -> int:
    """Write `folder/latest` + `folder/1/mp_rank_00_model_states.pt`; returns the file size in bytes.

    Shapes come from a meta-device CogVideoX-2B (no weights allocated), mapped to SAT names with the converter's own
    table; each tensor is then filled with random fp16 values, so one copy of the model exists in this process.
    """
    import torch
    from accelerate import init_empty_weights
    from diffusers import CogVideoXTransformer3DModel

    from repvideo_diffusers.convert import SAT_GATE_KEY, SAT_PREFIX
    from repvideo_diffusers.convert.keymap import _RULES

    with init_empty_weights():
        model = CogVideoXTransformer3DModel()  # diffusers defaults = CogVideoX-2B
    source = model.state_dict()
    layers = model.config.num_layers
    generator = torch.Generator().manual_seed(0)
    module = {}
    for rule in _RULES:
        for index in ([str(i) for i in range(layers)] if "{i}" in rule.sat else [None]):
            names = [n.replace("{i}", index) if index else n for n in rule.diffusers]
            for param in ("weight", "bias"):
                keys = [f"{n}.{param}" for n in names]
                if not all(k in source for k in keys):
                    continue
                shape = rule.merge([source[k] for k in keys]).shape
                module[f"{SAT_PREFIX}{rule.sat.replace('{i}', index) if index else rule.sat}.{param}"] = (
                    torch.randn(shape, generator=generator, dtype=torch.float32).mul_(0.02).half()
                )
    module[f"{SAT_PREFIX}mixins.pos_embed.pos_embedding"] = model.patch_embed.pos_embedding.half()
    module[f"{SAT_PREFIX}{SAT_GATE_KEY}"] = torch.full((layers,), 0.5, dtype=torch.float16)
    (folder / "1").mkdir(parents=True)
    file = folder / "1" / "mp_rank_00_model_states.pt"
    torch.save({"module": module}, file)
    (folder / "latest").write_text("1")
    return file.stat().st_size


def _child(sat: str, out: str, max_shard_size: str) -> None:
    """Run the conversion and print peak memory figures as JSON (run in a fresh process)."""
    peaks = {"anon_kb": 0, "file_kb": 0, "total_kb": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            status = Path("/proc/self/status").read_text().splitlines()
            values = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("RssAnon", "RssFile"))}
            peaks["anon_kb"] = max(peaks["anon_kb"], values.get("RssAnon", 0))
            peaks["file_kb"] = max(peaks["file_kb"], values.get("RssFile", 0))
            peaks["total_kb"] = max(peaks["total_kb"], values.get("RssAnon", 0) + values.get("RssFile", 0))
            time.sleep(0.02)

    import torch  # noqa: F401 - imported before the baseline so the library's own footprint is not counted

    from repvideo_diffusers.convert import convert_sat_checkpoint

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    baseline_anon_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                            if line.startswith("RssAnon"))
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    started = time.perf_counter()
    result = convert_sat_checkpoint(sat, out, max_shard_size=max_shard_size)
    seconds = time.perf_counter() - started
    stop.set()
    thread.join()
    print(json.dumps({
        "seconds": seconds,
        "baseline_rss_kb": baseline_kb,
        "baseline_anon_kb": baseline_anon_kb,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "peak_anon_kb": peaks["anon_kb"],
        "peak_file_kb": peaks["file_kb"],
        "peak_sampled_kb": peaks["total_kb"],
        "variant": result.variant,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=tempfile.gettempdir(), help="where the ~7 GB of files go (default /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic checkpoint and the output")
    parser.add_argument("--max-shard-size", default=None, help="shard size of the output (default: the converter's)")
    parser.add_argument("--child", nargs=3, metavar=("SAT", "OUT", "SHARD"), help=argparse.SUPPRESS)
    parser.add_argument("--build", metavar="SAT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    if args.build:
        print(build_synthetic_2b(Path(args.build)))
        return
    from repvideo_diffusers.convert import DEFAULT_MAX_SHARD_SIZE

    shard = args.max_shard_size or DEFAULT_MAX_SHARD_SIZE

    work = Path(tempfile.mkdtemp(prefix="repvideo-convert-bench-", dir=args.workdir))
    try:
        started = time.perf_counter()
        # Built in its own process: a child forked from a parent holding the model would start with a high-water
        # mark that is the parent's, not its own.
        built = subprocess.run([sys.executable, __file__, "--build", str(work / "sat")], check=True,
                               capture_output=True, text=True)
        size = int(built.stdout.strip().splitlines()[-1])
        print(f"built synthetic CogVideoX-2B SAT checkpoint: {size / 2**30:.2f} GiB in {time.perf_counter() - started:.0f}s")
        completed = subprocess.run(
            [sys.executable, __file__, "--child", str(work / "sat"), str(work / "out"), shard],
            check=True, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        figures = json.loads(completed.stdout.strip().splitlines()[-1])
        gib = 2**20  # kB per GiB
        print(f"variant: {figures['variant']}")
        print(f"conversion time: {figures['seconds']:.1f}s")
        print(f"peak RSS: {figures['peak_rss_kb'] / gib:.2f} GiB = {figures['peak_rss_kb'] * 1024 / size:.2f} x checkpoint "
              f"(process baseline before converting {figures['baseline_rss_kb'] / gib:.2f} GiB)")
        print(f"  sampled peak of anonymous + mapped pages at one moment: {figures['peak_sampled_kb'] / gib:.2f} GiB")
        allocated = figures["peak_anon_kb"] - figures["baseline_anon_kb"]
        print(f"  of which anonymous: peak {figures['peak_anon_kb'] / gib:.2f} GiB, of which the converter allocated "
              f"{allocated / gib:.2f} GiB = {allocated * 1024 / size:.2f} x checkpoint (the rest is imported libraries)")
        print(f"  of which mapped checkpoint pages: peak {figures['peak_file_kb'] / gib:.2f} GiB")
        written = sum(f.stat().st_size for f in (work / "out").rglob("*") if f.is_file())
        print(f"output: {written / 2**30:.2f} GiB (max shard size {shard}) in {len(list((work / 'out' / 'transformer').glob('*.safetensors')))} shard(s)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Step time and peak memory of `repvideo train` per mode (gates / lora / full), measured in one run.

Each mode runs in its own process (so the peak resident memory on CPU is that mode's own) on the same synthetic
clips; the table gives the median optimizer-step time and peak memory, and the ratio to gates-only training.

    python benchmarks/train_step.py                      # embedded tiny CogVideoX on CPU
    python benchmarks/train_step.py --model THUDM/CogVideoX-2b --data clips/ --mixed-precision bf16 \\
        --gradient-checkpointing --steps 10             # full size, on a GPU
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def synthetic_clips(folder: Path, count: int = 4) -> Path:
    import numpy as np

    from repvideo_diffusers.utils.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        t = np.arange(12)[:, None, None, None]
        x = np.arange(80)[None, None, :, None]
        pixels = np.broadcast_to((np.sin((x + 3 * t * (i + 1)) / 7.0) * 0.5 + 0.5), (12, 72, 80, 3))
        write_video((pixels * 255).astype(np.uint8), folder / f"clip{i}.mp4", fps=8)
        rows.append(json.dumps({"file_name": f"clip{i}.mp4", "text": f"stripes {i}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--data", default=None, help="default: 4 synthetic clips (tiny model only)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--modes", default="gates,lora,full")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--mixed-precision", default="no")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads per run (default 1: the tiny model is too small to gain from more, and "
                        "timings on a shared machine are steadier)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="repvideo-train-bench-"))
    data = args.data or str(synthetic_clips(work / "clips"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    rows = {}
    # Encode the clips once first, so no mode's peak memory includes the VAE and the text encoder at work.
    for mode in ["precompute", *args.modes.split(",")]:
        command = [sys.executable, "-m", "repvideo_diffusers", "train", "--data", data, "--output-dir",
                   str(work / mode), "--train", "gates" if mode == "precompute" else mode,
                   "--max-steps", "1" if mode == "precompute" else str(args.steps), "--checkpoint-every",
                   str(10**9), "--batch-size", str(args.batch_size), "--mixed-precision", args.mixed_precision,
                   "--report-to", "none", "--precompute-dir", str(work / "precomputed")]
        if args.model:
            command += ["--model", args.model]
        if args.gradient_checkpointing:
            command.append("--gradient-checkpointing")
        subprocess.run(command, env=env, check=True, capture_output=True)
        if mode == "precompute":
            continue
        rows[mode] = json.loads((work / mode / "train_summary.json").read_text())
    base = rows.get("gates") or next(iter(rows.values()))
    print(f"model: {args.model or 'embedded tiny CogVideoX'}, batch {args.batch_size}, {args.steps} steps, "
          f"mixed precision {args.mixed_precision}, gradient checkpointing {args.gradient_checkpointing}")
    print(f"{'mode':6} {'step (s, median)':>17} {'peak memory (MiB)':>18} {'time / gates':>13} {'memory / gates':>15}")
    for mode, row in rows.items():
        print(f"{mode:6} {row['median_step_time_s']:17.4f} {row['peak_memory_mb']:18.0f} "
              f"{row['median_step_time_s'] / base['median_step_time_s']:13.2f} "
              f"{row['peak_memory_mb'] / base['peak_memory_mb']:15.2f}")


if __name__ == "__main__":
    main()

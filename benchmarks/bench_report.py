"""The results of `bench_repvideo.py`: the markdown table it prints, the chart, and the JSON + PNG files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from repvideo_diffusers.utils.io import staged_folder


SMOKE_NOTE = ("note: size tiny is a smoke test of the harness: its blocks take microseconds, so these time ratios "
              "measure Python overhead and machine noise, not RepVideo's cost. Use --size medium (CPU) or 2b (GPU) "
              "for figures.")


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
    if report["size"] == "tiny":
        lines += ["", SMOKE_NOTE]
    lines.append("")
    lines.append(
        "vanilla: " + ", ".join(f"{n} {base[f'{n}_seconds_median'] * 1e3:.1f} ms" for n in steps)
        + ", " + ", ".join(f"{n} peak {base[f'{n}_peak_bytes'] / 2**20:.0f} MiB" for n in steps)
    )
    return "\n".join(lines)


def plot_report(report: dict, path: str | os.PathLike) -> None:
    """Bar chart: time ratios and extra memory of `repvideo` and `official` against `vanilla`."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state, works headless

    steps = [name for name in ("forward", "train") if f"{name}_time_ratio" in report["ratios"]["repvideo"]]
    figure = Figure(figsize=(9, 3.6))
    ax_time, ax_memory = figure.subplots(1, 2)
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


def check_out(out_dir: str | os.PathLike, size: str | None = None, overwrite: bool = False) -> Path:
    """Refuse a file as the results folder, and results of this ``size`` already there unless ``overwrite``
    (before minutes of measuring, and again before writing)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; pass a folder for the JSON and PNG results.")
    taken = [str(out_dir / f"bench-{size}{ext}") for ext in (".json", ".png")
             if size is not None and (out_dir / f"bench-{size}{ext}").exists()]
    if taken and not overwrite:
        raise ValueError(f"--out {str(out_dir)!r} already holds {' and '.join(taken)}. Choose another folder, or pass "
                         "--overwrite to replace them.")
    return out_dir


def write_report(report: dict, out_dir: str | os.PathLike, overwrite: bool = True) -> tuple[Path, Path]:
    """Write ``bench-<size>.json`` and ``bench-<size>.png`` into ``out_dir``, both or neither (other files stay)."""
    out_dir = check_out(out_dir, report["size"], overwrite)
    name = f"bench-{report['size']}"
    with staged_folder(out_dir, merge=True) as staging:
        (staging / f"{name}.json").write_text(json.dumps(report, indent=2))
        plot_report(report, staging / f"{name}.png")
    return out_dir / f"{name}.json", out_dir / f"{name}.png"

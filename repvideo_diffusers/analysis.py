"""The RepVideo paper's diagnostics as tools: ``repvideo_diffusers.analysis`` and ``repvideo analyze``.

The paper (arXiv 2501.08994, Sec. 3) motivates the feature cache with two measurements on a video DiT, and the
learned gates are the third thing worth looking at:

* **cross-layer attention-map similarity**: a layer x layer cosine-similarity matrix of the attention maps, per
  denoising step. Attention is recorded with `repvideo_diffusers.attention.capture_attention` for one query token
  per latent frame, so no N x N map is ever built;
* **adjacent-frame feature similarity**: after each block, the mean cosine similarity between the features of
  neighbouring latent frames at the same spatial position (higher = more temporally coherent features);
* **the gate per block** of the RepVideo run.

`analyze` runs the pipeline without and with RepVideo from the same seed and returns every number as a plain,
JSON-ready dict; `save_report` writes ``analysis.json`` plus three PNG figures.

Example:
    ```python
    >>> import tempfile
    >>> from repvideo_diffusers.analysis import analyze, save_report
    >>> from repvideo_diffusers.tiny import load_tiny_pipeline
    >>> report = analyze(load_tiny_pipeline(), "a fox in snow", num_inference_steps=2,
    ...                  max_sequence_length=16, progress=False)
    >>> len(report["runs"]["repvideo"]["attention_similarity"])  # one 4 x 4 matrix per step
    2
    >>> sorted(p.name for p in save_report(report, tempfile.mkdtemp()))
    ['analysis.json', 'attention_similarity.png', 'frame_similarity.png', 'gates.png']
    ```
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .attention import capture_attention
from . import _compat
from .core import is_repvideo_applied, remove_repvideo
from .families import get_family, get_transformer_blocks

REPORT_VERSION = 1
DEFAULT_PROMPT = "a fox in snow"  # short: the tiny model reads 16 tokens of one character each
FIGURES = ("attention_similarity.png", "frame_similarity.png", "gates.png")


# ----------------------------------------------------------------------------------------------------------------
# The measurements.
# ----------------------------------------------------------------------------------------------------------------


def attention_similarity(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Layer x layer cosine similarity of attention maps.

    Args:
        maps: one tensor per layer, all the same shape (batch, queries, key tokens), as recorded by
            `capture_attention`. Each query's row is compared across layers; the result averages over batch and
            queries.

    Returns:
        float64 (layers, layers) tensor with entries in [-1, 1] and ones on the diagonal.

    Example:
        ```python
        >>> import torch
        >>> from repvideo_diffusers.analysis import attention_similarity
        >>> a = torch.tensor([[[1.0, 0.0]]]); b = torch.tensor([[[0.0, 1.0]]])
        >>> attention_similarity([a, b, a]).tolist()
        [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
        ```
    """
    stacked = torch.stack([m.double().flatten(0, -2) for m in maps])  # (layers, rows, tokens)
    unit = torch.nn.functional.normalize(stacked, dim=-1)
    similarity = torch.einsum("lrn,mrn->lmr", unit, unit).mean(-1)
    similarity = ((similarity + similarity.T) / 2).clamp_(-1.0, 1.0)  # exactly symmetric despite rounding
    similarity.fill_diagonal_(1.0)  # a map is identical to itself; rounding must not say otherwise
    return similarity


def adjacent_frame_similarity(features: torch.Tensor, grid: tuple[int, int, int]) -> float:
    """Mean cosine similarity between neighbouring latent frames' features at the same spatial position.

    Args:
        features: video tokens (batch, t * h * w, channels) in frame-major order, as every supported block emits.
        grid: the token grid (t, h, w).

    Example:
        ```python
        >>> import torch
        >>> from repvideo_diffusers.analysis import adjacent_frame_similarity
        >>> frame = torch.randn(1, 4, 8)
        >>> adjacent_frame_similarity(torch.cat([frame, frame, -frame], dim=1), (3, 2, 2))  # (1 + -1) / 2
        0.0
        ```
    """
    t, h, w = grid
    if t < 2:
        raise ValueError(f"adjacent-frame similarity needs at least 2 latent frames, got {t}. Generate more frames.")
    if features.shape[1] != t * h * w:
        raise ValueError(
            f"expected {t} x {h} x {w} = {t * h * w} video tokens from the block, found {features.shape[1]}: "
            "this block's output is not laid out as the model's video token grid."
        )
    frames = features.double().unflatten(1, (t, h * w))
    cosine = torch.nn.functional.cosine_similarity(frames[:, :-1], frames[:, 1:], dim=-1)
    return round(float(cosine.mean()), 12)


class _StepRecorder:
    """Hooks on one transformer: per transformer call, the attention similarity and the per-block frame
    similarity; `close_step` averages the calls of one denoising step (CFG may run two calls per step)."""

    def __init__(self, transformer: torch.nn.Module, capture):
        self.capture = capture
        self.blocks = get_transformer_blocks(transformer)
        self.attention: list[torch.Tensor] = []
        self.frames: list[list[float]] = []
        self.current_frames: list[float] = []
        self.steps_attention: list[list[list[float]]] = []
        self.steps_frames: list[list[float]] = []
        self.handles = [transformer.register_forward_pre_hook(self._start)]
        for block_list, block in get_family(transformer).block_lists(transformer):
            index = block_list.outputs[0] if block_list.outputs is not None else 0  # the video stream
            self.handles.append(block.register_forward_hook(self._block_hook(index)))
        self.handles.append(transformer.register_forward_hook(self._finish))

    def _start(self, module, args):
        self.current_frames = []

    def _block_hook(self, index):
        def hook(module, args, output):
            features = output[index] if isinstance(output, tuple) else output
            self.current_frames.append(adjacent_frame_similarity(features.detach(), self.capture.grid))

        return hook

    def _finish(self, module, args, output):
        self.attention.append(attention_similarity(self.capture.maps))
        self.frames.append(self.current_frames)

    def close_step(self):
        if not self.attention:
            return
        self.steps_attention.append(torch.stack(self.attention).mean(0).tolist())
        self.steps_frames.append(torch.tensor(self.frames, dtype=torch.float64).mean(0).tolist())
        self.attention, self.frames = [], []

    def remove(self):
        for handle in self.handles:
            handle.remove()


def diagnose_transformer(transformer: torch.nn.Module, queries: str | Sequence[int] = "frames", **inputs) -> dict:
    """The diagnostics of one transformer forward call on ``inputs`` (no pipeline, no denoising loop).

    Returns:
        ``{"attention_similarity": layers x layers, "frame_similarity": one value per block, "grid": (t, h, w)}``.

    Example:
        ```python
        >>> from repvideo_diffusers.analysis import diagnose_transformer
        >>> from repvideo_diffusers.testing import TINY_MODELS
        >>> transformer, inputs = TINY_MODELS["Wan"].build()
        >>> result = diagnose_transformer(transformer, **inputs)
        >>> len(result["attention_similarity"]), len(result["frame_similarity"])
        (4, 4)
        ```
    """
    with capture_attention(transformer, queries=queries) as capture:
        recorder = _StepRecorder(transformer, capture)
        try:
            with torch.no_grad():
                transformer(**inputs)
        finally:
            recorder.remove()
        recorder.close_step()
    return {
        "attention_similarity": recorder.steps_attention[0],
        "frame_similarity": recorder.steps_frames[0],
        "grid": list(capture.grid),
    }


def _run(pipe, label, call, steps, queries, progress) -> dict:
    transformer = pipe.transformer
    bar = tqdm(total=steps, desc=f"analyze ({label})", unit="step", disable=not progress)
    timesteps = []
    with capture_attention(transformer, queries=queries) as capture:
        recorder = _StepRecorder(transformer, capture)
        try:
            if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:

                def on_step_end(pipeline, step, timestep, callback_kwargs):
                    recorder.close_step()
                    timesteps.append(float(timestep))
                    bar.update(1)
                    return callback_kwargs

                pipe(**call, callback_on_step_end=on_step_end)
            else:  # no step callback: count every transformer call as a step
                recorder.handles.append(transformer.register_forward_hook(lambda *a: (recorder.close_step(), bar.update(1))))
                pipe(**call)
        finally:
            recorder.remove()
            bar.close()
    return {
        "timesteps": timesteps,
        "attention_similarity": recorder.steps_attention,
        "frame_similarity": recorder.steps_frames,
        "query_tokens": capture.query_tokens.tolist(),
        "grid": list(capture.grid),
    }


def analyze(
    pipe,
    prompt: str = DEFAULT_PROMPT,
    *,
    num_inference_steps: int = 4,
    gates=None,
    runs: Sequence[str] = ("base", "repvideo"),
    queries: str | Sequence[int] = "frames",
    seed: int = 0,
    progress: bool = True,
    **call_kwargs,
) -> dict:
    """Run the paper's diagnostics on a video pipeline, without and with RepVideo, from the same seed.

    Args:
        pipe: a diffusers pipeline whose ``transformer`` is supported (CogVideoX, Wan, HunyuanVideo, LTX-Video, Mochi).
        prompt: the text prompt.
        num_inference_steps: denoising steps; every number is reported per step.
        gates: what the RepVideo run uses, as for ``pipe.enable_repvideo``: a `RepVideoConfig`, a gates folder or
            Hub id, `RepVideoGates`, or ``None`` (the gates already on the pipeline, else those saved with it,
            else fresh gates).
        runs: ``"base"`` (RepVideo off) and/or ``"repvideo"``.
        queries: the query tokens whose attention is recorded (see `capture_attention`).
        seed: seed of the initial noise (the same for every run).
        progress: show a tqdm bar over denoising steps.
        **call_kwargs: passed to the pipeline call (``height``, ``width``, ``num_frames``, ``guidance_scale``,
            ``max_sequence_length``, ...).

    Returns:
        A JSON-ready dict: the set-up, the layer names, and per run the per-step attention-similarity matrices
        (step x layer x layer), the per-step adjacent-frame similarity per block (step x block), the gates
        (RepVideo run) and a summary. The pipeline's RepVideo state is restored afterwards.
    """
    unknown = set(runs) - {"base", "repvideo"}
    if not runs or unknown:
        raise ValueError(f"runs must name 'base' and/or 'repvideo', got {list(runs)!r}.")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps}.")
    transformer = pipe.transformer
    family = get_family(transformer)
    previous_gates = transformer.repvideo_gates if is_repvideo_applied(transformer) else None
    device = next(transformer.parameters()).device
    call = {
        "prompt": prompt,
        "num_inference_steps": num_inference_steps,
        "output_type": "latent",  # the diagnostics need no decoded video: skip the VAE
        **call_kwargs,
    }
    progress_config = _compat.get_progress_bar_config(pipe)
    pipe.set_progress_bar_config(disable=True)  # our bar counts the steps of both runs
    report = {
        "version": REPORT_VERSION,
        "model": str(getattr(pipe.config, "_name_or_path", None) or type(pipe).__name__),
        "family": family.name,
        "prompt": prompt,
        "num_inference_steps": num_inference_steps,
        "seed": seed,
        "call": {k: v for k, v in call_kwargs.items() if isinstance(v, (int, float, str, bool))},
        "layers": [f"block {i}" for i in range(len(get_transformer_blocks(transformer)))],
        "runs": {},
    }
    try:
        for label in runs:
            if label == "base":
                remove_repvideo(transformer)
            else:
                pipe.enable_repvideo(gates if gates is not None else previous_gates)
            generator = torch.Generator(device="cpu").manual_seed(seed)
            result = _run(pipe, label, {**call, "generator": generator}, num_inference_steps, queries, progress)
            if label == "repvideo":
                result["gates"] = [float(g) for g in transformer.repvideo_gates.gate.detach().float().cpu()]
                result["window"] = transformer.repvideo_gates.config.window
            result["summary"] = _summary(result)
            report["runs"][label] = result
    finally:
        remove_repvideo(transformer)
        if previous_gates is not None:
            pipe.enable_repvideo(previous_gates)
        _compat.restore_progress_bar_config(pipe, progress_config)
    report["device"] = str(device)
    return report


def _summary(run: dict) -> dict:
    matrices = torch.tensor(run["attention_similarity"], dtype=torch.float64)  # (steps, L, L)
    layers = matrices.shape[-1]
    off_diagonal = matrices[:, ~torch.eye(layers, dtype=torch.bool)] if layers > 1 else matrices.flatten(1)
    adjacent = torch.diagonal(matrices, offset=1, dim1=-2, dim2=-1) if layers > 1 else matrices.flatten(1)
    frames = torch.tensor(run["frame_similarity"], dtype=torch.float64)
    return {
        "mean_cross_layer_attention_similarity": float(off_diagonal.mean()),
        "mean_adjacent_layer_attention_similarity": float(adjacent.mean()),
        "mean_adjacent_frame_similarity": float(frames.mean()),
        "last_block_adjacent_frame_similarity": float(frames[:, -1].mean()),
    }


# ----------------------------------------------------------------------------------------------------------------
# Figures and the JSON file.
# ----------------------------------------------------------------------------------------------------------------

_RUN_TITLES = {"base": "without RepVideo", "repvideo": "with RepVideo"}
_RUN_COLORS = {"base": "tab:gray", "repvideo": "tab:blue"}


def _shown_steps(count: int, most: int = 4) -> list[int]:
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def plot_attention_similarity(report: dict, path: str | os.PathLike):
    """Heatmaps of the layer x layer attention-map similarity: one row per run, a few steps plus their mean."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state, works headless

    runs = list(report["runs"])
    steps = len(next(iter(report["runs"].values()))["attention_similarity"])
    shown = _shown_steps(steps)
    columns = len(shown) + 1
    figure = Figure(figsize=(3.2 * columns + 1.2, 3.2 * len(runs) + 0.8))
    axes = figure.subplots(len(runs), columns, squeeze=False)
    image = None
    for row, label in enumerate(runs):
        run = report["runs"][label]
        matrices = torch.tensor(run["attention_similarity"])
        panels = [(matrices[s], f"step {s + 1}/{steps}") for s in shown] + [(matrices.mean(0), "mean over steps")]
        for column, (matrix, title) in enumerate(panels):
            axis = axes[row, column]
            image = axis.imshow(matrix.numpy(), vmin=0.0, vmax=1.0, cmap="viridis", origin="upper")
            axis.set_title(f"{_RUN_TITLES[label]}\n{title}", fontsize=9)
            axis.set_xlabel("layer (block)")
            if column == 0:
                axis.set_ylabel("layer (block)")
            ticks = range(0, matrix.shape[0], max(1, matrix.shape[0] // 6))
            axis.set_xticks(list(ticks))
            axis.set_yticks(list(ticks))
        mean = run["summary"]["mean_cross_layer_attention_similarity"]
        axes[row, 0].annotate(
            f"mean off-diagonal {mean:.3f}", (0.0, -0.32), xycoords="axes fraction", fontsize=8, color="dimgray"
        )
    figure.colorbar(image, ax=axes, shrink=0.85, label="cosine similarity of attention maps")
    figure.suptitle(
        f"Cross-layer attention-map similarity ({report['family']}, {len(report['layers'])} layers, "
        f"one query token per latent frame)",
        fontsize=11,
    )
    figure.savefig(path, dpi=110, bbox_inches="tight")


def plot_frame_similarity(report: dict, path: str | os.PathLike):
    """Adjacent-frame feature similarity after each block: mean over steps, with the spread over steps shaded."""
    import matplotlib.ticker
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state, works headless

    figure = Figure(figsize=(7.5, 4.2))
    axis = figure.subplots()
    for label, run in report["runs"].items():
        values = torch.tensor(run["frame_similarity"], dtype=torch.float64)  # (steps, blocks)
        blocks = range(values.shape[1])
        axis.plot(blocks, values.mean(0), marker="o", color=_RUN_COLORS[label],
                  label=f"{_RUN_TITLES[label]} (mean {values.mean():.3f})")
        axis.fill_between(blocks, values.min(0).values, values.max(0).values, color=_RUN_COLORS[label], alpha=0.2)
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("block")
    axis.set_ylabel("cosine similarity of adjacent latent frames")
    axis.set_title(f"Adjacent-frame feature similarity after each block ({report['family']}; band: range over steps)")
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    figure.savefig(path, dpi=110, bbox_inches="tight")


def plot_gates(report: dict, path: str | os.PathLike):
    """The learned gate of every block, with the feature-cache windows marked."""
    import matplotlib.ticker
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state, works headless

    figure = Figure(figsize=(7.5, 3.6))
    axis = figure.subplots()
    run = report["runs"].get("repvideo")
    if run is None:
        axis.text(0.5, 0.5, "no RepVideo run in this report", ha="center", va="center", transform=axis.transAxes)
        axis.set_axis_off()
    else:
        gates, window = run["gates"], run["window"]
        # After a cache reset the cache holds only the block's own input: the gate there has no effect.
        no_op = [i == 0 or (i - 1) % window == 0 for i in range(len(gates))]
        colors = ["lightgray" if skip else "tab:blue" for skip in no_op]
        axis.bar(range(len(gates)), gates, color=colors)
        for reset in range(0, len(gates), window):
            axis.axvline(reset + 0.5, color="tab:red", linestyle=":", linewidth=1)
        axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        axis.set_xlabel("block")
        axis.set_ylabel("gate g (weight of the cache mean)")
        axis.set_ylim(min(0.0, min(gates)), max(1.0, max(gates)))
        axis.set_title(f"RepVideo gates (window {window}; red: cache reset; gray: gate has no effect)")
        axis.grid(axis="y", alpha=0.3)
    figure.savefig(path, dpi=110, bbox_inches="tight")


def save_report(report: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``analysis.json`` and the three figures into ``out_dir``; returns their paths.

    Everything is rendered into a temporary folder first and moved into place only when all of it succeeded,
    so a failure never leaves half a report behind.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; the report needs a folder. Pass a folder path.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        with open(staging / "analysis.json", "w") as handle:
            json.dump(report, handle, indent=1)
        plot_attention_similarity(report, staging / FIGURES[0])
        plot_frame_similarity(report, staging / FIGURES[1])
        plot_gates(report, staging / FIGURES[2])
        out_dir.mkdir(exist_ok=True)
        paths = []
        for name in ("analysis.json", *FIGURES):
            os.replace(staging / name, out_dir / name)
            paths.append(out_dir / name)
        return paths
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# ``repvideo analyze``
# ----------------------------------------------------------------------------------------------------------------


def register(subparsers) -> None:
    from .generate import add_pipeline_arguments

    parser = subparsers.add_parser(
        "analyze",
        help="the paper's diagnostics: cross-layer attention similarity, adjacent-frame similarity, gates",
        description="Run a video pipeline without and with RepVideo and write the RepVideo paper's diagnostics: "
        "a layer x layer attention-map similarity per denoising step, the adjacent-frame feature similarity "
        "after each block, and the gates, as PNG figures plus analysis.json. Without --model it runs the "
        "embedded tiny CogVideoX pipeline (random weights, offline, seconds on a CPU).",
    )
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT, help="text prompt (default: a fox in the snow)")
    parser.add_argument("--out", default="repvideo-analysis", help="output folder (default: repvideo-analysis)")
    add_pipeline_arguments(parser, gates_help="gates folder or Hub id for the RepVideo run (default: gates saved "
                           "with the model, else fresh gates)")
    parser.add_argument("--queries", default="frames",
                        help="query tokens whose attention is recorded: 'frames' (one per latent frame) or comma-separated token indices")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--no-base", action="store_true", help="only the RepVideo run")
    runs.add_argument("--no-repvideo", action="store_true", help="only the run without RepVideo")
    parser.set_defaults(func=run)


def _parse_queries(text: str):
    if text == "frames":
        return "frames"
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--queries must be 'frames' or comma-separated token indices like 0,120,240; got {text!r}.") from None


def run(args: argparse.Namespace) -> int:
    import repvideo_diffusers  # noqa: F401 - adds enable_repvideo to pipelines

    from .generate import check_pipeline_arguments, default_dtype, prepare_pipeline, set_attention

    check_pipeline_arguments(args)
    queries = _parse_queries(args.queries)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe, call = prepare_pipeline(args, default_dtype(args.dtype, device))
    pipe.to(device)
    set_attention(pipe, args.attention)
    runs = ("repvideo",) if args.no_base else ("base",) if args.no_repvideo else ("base", "repvideo")
    report = analyze(
        pipe, args.prompt, gates=args.gates, runs=runs, queries=queries, seed=args.seed, **call,
    )
    paths = save_report(report, args.out)
    for label, result in report["runs"].items():
        summary = result["summary"]
        print(
            f"{_RUN_TITLES[label]}: cross-layer attention similarity {summary['mean_cross_layer_attention_similarity']:.4f}, "
            f"adjacent-frame similarity {summary['mean_adjacent_frame_similarity']:.4f}"
        )
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0

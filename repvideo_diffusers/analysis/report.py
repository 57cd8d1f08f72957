"""An analysis report: `analyze` runs a pipeline without and with RepVideo and gathers the measurements of
`repvideo_diffusers.analysis.metrics` per denoising step into a JSON-ready dict; `save_report` writes it with its
figures; `format_summary` is the text ``repvideo analyze`` prints.

Example:
    ```python
    >>> from repvideo_diffusers.analysis import analyze, format_summary
    >>> from repvideo_diffusers.tiny import load_tiny_pipeline
    >>> report = analyze(load_tiny_pipeline(), num_inference_steps=1, runs=("repvideo",),
    ...                  max_sequence_length=16, progress=False)
    >>> report["runs"]["repvideo"]["gates"]
    [0.5, 0.5, 0.5, 0.5]
    >>> print(format_summary(report))  # doctest: +ELLIPSIS
    with RepVideo: cross-layer attention similarity ..., adjacent-frame similarity ...

    ```
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from .. import _compat
from ..attention import capture_attention
from ..core import is_repvideo_applied, remove_repvideo
from ..families import get_family, get_transformer_blocks
from ..utils.io import staged_folder
from . import plots
from .metrics import StepRecorder

REPORT_VERSION = 1
DEFAULT_PROMPT = "a fox in snow"  # short: the tiny model reads 16 tokens of one character each
FIGURES = ("attention_similarity.png", "frame_similarity.png", "gates.png")


def _run(pipe, label, call, steps, queries, progress) -> dict:
    transformer = pipe.transformer
    bar = tqdm(total=steps, desc=f"analyze ({label})", unit="step", disable=not progress)
    timesteps = []
    with capture_attention(transformer, queries=queries) as capture:
        recorder = StepRecorder(transformer, capture)
        try:
            if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:

                def on_step_end(pipeline, step, timestep, callback_kwargs):
                    recorder.close_step()
                    # one timestep per latent frame in diffusion-forcing pipelines (SkyReels-V2 DF)
                    timesteps.append(float(timestep) if timestep.numel() == 1 else timestep.flatten().tolist())
                    bar.update(1)
                    return callback_kwargs

                pipe(**call, callback_on_step_end=on_step_end)
            else:  # no step callback: count every transformer call as a step
                def on_call(*_):  # returns None: a forward hook's return value would replace the output
                    recorder.close_step()
                    bar.update(1)

                recorder.handles.append(transformer.register_forward_hook(on_call))
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
    report = _report_setup(pipe, prompt, num_inference_steps, seed, call_kwargs)
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
    try:
        for label in runs:
            if label == "base":
                remove_repvideo(transformer)
            else:
                pipe.enable_repvideo(gates if gates is not None else previous_gates)
            report["runs"][label] = _measure_run(pipe, label, call, seed, queries, progress)
    finally:
        remove_repvideo(transformer)
        if previous_gates is not None:
            pipe.enable_repvideo(previous_gates)
        _compat.restore_progress_bar_config(pipe, progress_config)
    report["device"] = str(device)
    return report


def _report_setup(pipe, prompt: str, num_inference_steps: int, seed: int, call_kwargs: dict) -> dict:
    """The report's header: what was run, on which model (raises for an unsupported transformer)."""
    transformer = pipe.transformer
    return {
        "version": REPORT_VERSION,
        "model": str(getattr(pipe.config, "_name_or_path", None) or type(pipe).__name__),
        "family": get_family(transformer).name,
        "prompt": prompt,
        "num_inference_steps": num_inference_steps,
        "seed": seed,
        "call": {k: v for k, v in call_kwargs.items() if isinstance(v, (int, float, str, bool))},
        "layers": [f"block {i}" for i in range(len(get_transformer_blocks(transformer)))],
        "runs": {},
    }


def _measure_run(pipe, label: str, call: dict, seed: int, queries, progress: bool) -> dict:
    """One run from the seeded noise, with RepVideo already on or off: its measurements, gates and summary."""
    transformer = pipe.transformer
    generator = torch.Generator(device="cpu").manual_seed(seed)
    result = _run(pipe, label, {**call, "generator": generator}, call["num_inference_steps"], queries, progress)
    if label == "repvideo":
        result["gates"] = [float(g) for g in transformer.repvideo_gates.gate.detach().float().cpu()]
        result["window"] = transformer.repvideo_gates.config.window
    result["summary"] = _summary(result)
    return result


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


def save_report(report: dict, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``analysis.json`` and the three figures into ``out_dir``; returns their paths.

    Everything is rendered into a staging folder first and moved into place only when all of it succeeded, so a
    failure never leaves half a report behind; other files in ``out_dir`` stay.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; the report needs a folder. Pass a folder path.")
    # The figures are looked up on the plots module at call time, so a replaced one (a test's failing figure) is used.
    figures = (plots.plot_attention_similarity, plots.plot_frame_similarity, plots.plot_gates)
    with staged_folder(out_dir, merge=True) as staging:
        with open(staging / "analysis.json", "w") as handle:
            json.dump(report, handle, indent=1)
        for name, plot in zip(FIGURES, figures):
            plot(report, staging / name)
    return [out_dir / name for name in ("analysis.json", *FIGURES)]


def format_summary(report: dict) -> str:
    """One line per run: its mean cross-layer attention similarity and mean adjacent-frame similarity."""
    lines = []
    for label, result in report["runs"].items():
        summary = result["summary"]
        lines.append(
            f"{plots.RUN_TITLES[label]}: cross-layer attention similarity "
            f"{summary['mean_cross_layer_attention_similarity']:.4f}, "
            f"adjacent-frame similarity {summary['mean_adjacent_frame_similarity']:.4f}"
        )
    return "\n".join(lines)

"""See RepVideo's effect: one prompt, one seed, generated without and with RepVideo, side by side, and the paper's
temporal-consistency view of both runs: the adjacent-frame feature similarity per latent frame (the library behind
``repvideo compare``).

`compare_videos` runs the pipeline twice from the same initial noise and records, for every pair of neighbouring
latent frames ``(t, t + 1)``, the cosine similarity of their features at the same spatial position
(`repvideo_diffusers.analysis.adjacent_frame_similarity` on that pair), averaged over blocks, transformer calls and
denoising steps. `write_comparison` writes the side-by-side mp4 (left: without RepVideo, right: with) and the figure
of both curves, each moved into place only when both are complete.

Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from repvideo_diffusers import RepVideoConfig
    >>> from repvideo_diffusers.analysis.compare import compare_videos, write_comparison
    >>> from repvideo_diffusers.tiny import load_tiny_pipeline
    >>> result = compare_videos(load_tiny_pipeline(), "a fox in snow", gates=RepVideoConfig(gate_init=0.0),
    ...                         num_inference_steps=1, max_sequence_length=16, progress=False)
    >>> np.array_equal(result.base, result.repvideo)  # zero gates: RepVideo changes nothing
    True
    >>> result.side_by_side().shape  # 9 frames, 64 x (2 x 96)
    (9, 64, 192, 3)
    >>> [p.name for p in write_comparison(result, Path(tempfile.mkdtemp()) / "cmp.mp4")]
    ['cmp.mp4', 'cmp_frame_similarity.png']

    ```
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import _compat
from ..attention.capture import attention_facts
from ..core import is_repvideo_applied, remove_repvideo
from ..families import get_family
from .metrics import adjacent_frame_similarity
from .plots import RUN_TITLES

COLORS = {"base": "tab:gray", "repvideo": "tab:blue"}  # as in `repvideo analyze`'s figures


@dataclass
class Comparison:
    """Both runs of `compare_videos`: frames ``(F, H, W, 3)`` in ``[0, 1]``, and per run the adjacent-frame feature
    similarity of each latent frame pair (one value per pair, mean over blocks, calls and steps)."""

    prompt: str
    base: np.ndarray
    repvideo: np.ndarray
    base_similarity: list[float]
    repvideo_similarity: list[float]
    gates: list[float]
    family: str

    def side_by_side(self) -> np.ndarray:
        """The two videos next to each other, frame by frame: without RepVideo on the left, with it on the right."""
        return np.concatenate([self.base, self.repvideo], axis=2)


class _FrameRecorder:
    """Hooks on one transformer that add up, per latent frame pair, the similarity after every block."""

    def __init__(self, transformer: torch.nn.Module):
        family = get_family(transformer)
        facts = attention_facts(family)  # the video token grid of a forward call
        self.sums: torch.Tensor | None = None
        self.count = 0
        self.grid = None

        def start(module, args, kwargs):
            self.grid = facts.grid(transformer, args, kwargs)

        def after_block(index):
            def hook(module, args, output):
                features = output[index] if isinstance(output, tuple) else output
                t, h, w = self.grid
                if features.shape[1] > t * h * w:  # other tokens in the stream too (text, history)
                    features = features[:, -t * h * w:] if facts.text_first else features[:, : t * h * w]
                if t < 2:
                    adjacent_frame_similarity(features, self.grid)  # raises, saying to generate more frames
                pairs = torch.tensor([
                    adjacent_frame_similarity(features[:, i * h * w: (i + 2) * h * w].detach(), (2, h, w))
                    for i in range(t - 1)
                ], dtype=torch.float64)
                self.sums = pairs if self.sums is None else self.sums + pairs
                self.count += 1
            return hook

        self.handles = [transformer.register_forward_pre_hook(start, with_kwargs=True)]
        for block_list, block in family.block_lists(transformer):
            index = block_list.outputs[0] if block_list.outputs is not None else 0  # the video stream
            self.handles.append(block.register_forward_hook(after_block(index)))

    def result(self) -> list[float]:
        return (self.sums / self.count).tolist() if self.count else []

    def remove(self):
        for handle in self.handles:
            handle.remove()


def _generate(pipe, call: dict, seed: int, bar) -> tuple[np.ndarray, list[float]]:
    """One run from the seeded noise, with RepVideo already on or off: its frames and per-pair similarity."""
    recorder = _FrameRecorder(pipe.transformer)
    call = {**call, "output_type": "np", "generator": torch.Generator(device="cpu").manual_seed(seed)}
    try:
        if "callback_on_step_end" in inspect.signature(pipe.__call__).parameters:
            def on_step_end(pipeline, step, timestep, callback_kwargs):
                bar.update(1)
                return callback_kwargs

            frames = pipe(**call, callback_on_step_end=on_step_end).frames[0]
        else:  # no step callback: count transformer calls
            def on_call(*_):  # returns None: a forward hook's return value would replace the output
                bar.update(1)

            recorder.handles.append(pipe.transformer.register_forward_hook(on_call))
            frames = pipe(**call).frames[0]
    finally:
        recorder.remove()
    return np.asarray(frames, dtype=np.float32), recorder.result()


def compare_videos(pipe, prompt: str, *, gates=None, seed: int = 0, num_inference_steps: int = 4,
                   progress: bool = True, **call_kwargs) -> Comparison:
    """Generate ``prompt`` without and with RepVideo from the same seed, recording the adjacent-frame similarity.

    Args:
        pipe: a diffusers pipeline whose transformer is of a family with attention facts (every built-in family).
        gates: what the RepVideo run uses, as for ``pipe.enable_repvideo``: a `RepVideoConfig`, a gates folder or
            Hub id, `RepVideoGates`, or ``None`` (the gates already on the pipeline, else those saved with it, else
            fresh gates). The pipeline's RepVideo state is restored afterwards.
        seed: seed of the initial noise, the same for both runs.
        progress: a tqdm bar over the denoising steps of both runs (the pipeline's own bar is silenced meanwhile).
        **call_kwargs: passed to the pipeline call (``num_frames``, ``height``, ``width``, ``guidance_scale``, ...).
    """
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be a positive integer, got {num_inference_steps}.")
    transformer = pipe.transformer
    family = get_family(transformer).name
    attention_facts(get_family(transformer))  # fail before any work if the grid cannot be read
    previous = transformer.repvideo_gates if is_repvideo_applied(transformer) else None
    call = {"prompt": prompt, "num_inference_steps": num_inference_steps, **call_kwargs}
    progress_config = _compat.get_progress_bar_config(pipe)
    pipe.set_progress_bar_config(disable=True)
    bar = tqdm(total=2 * num_inference_steps, desc="compare", unit="step", disable=not progress)
    try:
        remove_repvideo(transformer)
        bar.set_postfix_str(RUN_TITLES["base"])
        base, base_similarity = _generate(pipe, call, seed, bar)
        used = pipe.enable_repvideo(gates if gates is not None else previous)
        bar.set_postfix_str(RUN_TITLES["repvideo"])
        repvideo, repvideo_similarity = _generate(pipe, call, seed, bar)
        gate_values = [float(g) for g in used.gate.detach().float().cpu()]
    finally:
        bar.close()
        remove_repvideo(transformer)
        if previous is not None:
            pipe.enable_repvideo(previous)
        _compat.restore_progress_bar_config(pipe, progress_config)
    return Comparison(prompt, base, repvideo, base_similarity, repvideo_similarity, gate_values, family)


def similarity_figure_path(out: str | os.PathLike) -> Path:
    """Where `write_comparison` puts the figure for the video ``out``: ``cmp.mp4`` -> ``cmp_frame_similarity.png``.

    Example:
        >>> similarity_figure_path("runs/cmp.mp4").as_posix()
        'runs/cmp_frame_similarity.png'
    """
    out = Path(out)
    return out.with_name(f"{out.stem}_frame_similarity.png")


def plot_frame_similarity_per_frame(result: Comparison, path: str | os.PathLike) -> None:
    """The adjacent-frame feature similarity of every latent frame pair, both runs on one axis."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.2))
    axis = figure.subplots()
    for label, values in (("base", result.base_similarity), ("repvideo", result.repvideo_similarity)):
        axis.plot(range(len(values)), values, marker="o", color=COLORS[label],
                  label=f"{RUN_TITLES[label]} (mean {np.mean(values):.4f})")
    pairs = len(result.base_similarity)
    step = max(1, pairs // 12)
    axis.set_xticks(range(0, pairs, step), [f"{t}-{t + 1}" for t in range(0, pairs, step)])
    axis.set_xlabel("latent frames")
    axis.set_ylabel("cosine similarity of adjacent latent frames")
    axis.set_title(f"Adjacent-frame feature similarity ({result.family}; mean over blocks and steps)")
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    figure.savefig(path, dpi=110, bbox_inches="tight")


def write_comparison(result: Comparison, out: str | os.PathLike, fps: float = 8.0) -> list[Path]:
    """Write the side-by-side mp4 ``out`` and its figure (`similarity_figure_path`); returns both paths. Both are
    rendered beside their destinations first and moved into place only when both are complete."""
    from ..utils.io import staged_file
    from ..utils.video import write_video

    out = Path(out)
    figure = similarity_figure_path(out)
    with staged_file(out, suffix=out.suffix or ".mp4") as video_staging, staged_file(figure) as figure_staging:
        write_video(result.side_by_side(), video_staging, fps=fps)
        plot_frame_similarity_per_frame(result, figure_staging)
    return [out, figure]

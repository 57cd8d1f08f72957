"""The figures of an analysis report (the dict `repvideo_diffusers.analysis.analyze` returns). Matplotlib's object
API, no pyplot: no global backend or figure state, works headless.

Example:
    ```python
    >>> import os, tempfile
    >>> from repvideo_diffusers.analysis.plots import plot_frame_similarity, plot_gates
    >>> report = {"family": "CogVideoX", "layers": ["block 0", "block 1"], "runs": {
    ...     "repvideo": {"frame_similarity": [[0.9, 0.8]], "gates": [0.5, 0.5], "window": 6}}}
    >>> folder = tempfile.mkdtemp()
    >>> plot_frame_similarity(report, os.path.join(folder, "frames.png"))
    >>> plot_gates(report, os.path.join(folder, "gates.png"))
    >>> sorted(os.listdir(folder))
    ['frames.png', 'gates.png']

    ```
"""

from __future__ import annotations

import os

import torch

from ..utils import plotting

RUN_TITLES = {"base": "without RepVideo", "repvideo": "with RepVideo"}
_RUN_COLORS = {"base": "tab:gray", "repvideo": "tab:blue"}


def _shown_steps(count: int, most: int = 4) -> list[int]:
    if count <= most:
        return list(range(count))
    return sorted({round(i * (count - 1) / (most - 1)) for i in range(most)})


def plot_attention_similarity(report: dict, path: str | os.PathLike):
    """Heatmaps of the layer x layer attention-map similarity: one row per run, a few steps plus their mean."""
    from matplotlib.figure import Figure

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
            axis.set_title(f"{RUN_TITLES[label]}\n{title}", fontsize=9)
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
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 4.2))
    axis = figure.subplots()
    for label, run in report["runs"].items():
        values = torch.tensor(run["frame_similarity"], dtype=torch.float64)  # (steps, blocks)
        blocks = range(values.shape[1])
        axis.plot(blocks, values.mean(0), marker="o", color=_RUN_COLORS[label],
                  label=f"{RUN_TITLES[label]} (mean {values.mean():.3f})")
        axis.fill_between(blocks, values.min(0).values, values.max(0).values, color=_RUN_COLORS[label], alpha=0.2)
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("block")
    axis.set_ylabel("cosine similarity of adjacent latent frames")
    axis.set_title(f"Adjacent-frame feature similarity after each block ({report['family']}; band: range over steps)")
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    figure.savefig(path, dpi=110, bbox_inches="tight")


def plot_gates(report: dict, path: str | os.PathLike):
    """The gate of every block of the report's RepVideo run, with the feature-cache windows marked (the package's
    one gate figure, `repvideo_diffusers.utils.plotting.plot_gates`); a report without that run gets a figure
    saying so."""
    run = report["runs"].get("repvideo")
    if run is None:
        plotting.plot_gates(None, path)
    else:
        plotting.plot_gates(run["gates"], path, window=run["window"])

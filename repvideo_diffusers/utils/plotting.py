"""The one figure of RepVideo gates (used by `repvideo analyze` and `repvideo train`). Matplotlib's object API, no
pyplot: no global backend or figure state, works headless.

Example:
    ```python
    >>> import tempfile, os
    >>> from repvideo_diffusers.utils.plotting import plot_gates
    >>> path = os.path.join(tempfile.mkdtemp(), "gates.png")
    >>> plot_gates([0.5, 0.5, 0.3, 0.7], path, window=2, history_steps=[1, 2], history=[[0.5] * 4, [0.5, 0.5, 0.3, 0.7]])
    >>> open(path, "rb").read(4)
    b'\\x89PNG'

    ```
"""

from __future__ import annotations

import os
from typing import Sequence


def gate_has_no_effect(index: int, window: int) -> bool:
    """Whether the gate of block ``index`` can change nothing: right after a cache reset (and at block 0) the cache
    holds only the block's own input, so the blend is a no-op."""
    return index == 0 or (index - 1) % window == 0


def plot_gates(gates: Sequence[float] | None, path: str | os.PathLike, *, window: int | None = None,
               history_steps: Sequence[int] | None = None, history: Sequence[Sequence[float]] | None = None,
               title: str | None = None) -> None:
    """Bar chart of the gate of every block (execution order); with ``window``, the cache resets are marked and the
    gates that have no effect are greyed; with a ``history`` (training), a second panel shows the gates over steps.
    ``gates=None`` writes a figure that says there is no RepVideo run."""
    import matplotlib.ticker
    from matplotlib.figure import Figure

    panels = 2 if history else 1
    figure = Figure(figsize=(7.5 if panels == 1 else 11, 3.6))
    axes = figure.subplots(1, panels, squeeze=False)[0]
    axis = axes[0]
    if gates is None:
        axis.text(0.5, 0.5, "no RepVideo run in this report", ha="center", va="center", transform=axis.transAxes)
        axis.set_axis_off()
        figure.savefig(path, dpi=110, bbox_inches="tight")
        return
    gates = [float(g) for g in gates]
    colors = ["tab:blue"] * len(gates)
    if window:
        colors = ["lightgray" if gate_has_no_effect(i, window) else "tab:blue" for i in range(len(gates))]
        for reset in range(0, len(gates), window):
            axis.axvline(reset + 0.5, color="tab:red", linestyle=":", linewidth=1)
    axis.bar(range(len(gates)), gates, color=colors)
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_xlabel("block (execution order)")
    axis.set_ylabel("gate g (weight of the cache mean)")
    axis.set_ylim(min(0.0, min(gates)), max(1.0, max(gates)))
    axis.set_title(title or (f"RepVideo gates (window {window}; red: cache reset; gray: gate has no effect)"
                             if window else "RepVideo gates"))
    axis.grid(axis="y", alpha=0.3)
    if history:
        right = axes[1]
        for block in range(len(history[0])):
            right.plot(list(history_steps), [row[block] for row in history], label=str(block), linewidth=1)
        if len(history[0]) <= 12:
            right.legend(title="block", fontsize=6, ncol=2)
        right.set_xlabel("step")
        right.set_title("gate values during training")
        right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")

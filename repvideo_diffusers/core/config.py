"""`RepVideoConfig`: the two numbers that define RepVideo's feature cache and gates."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class RepVideoConfig:
    r"""Configuration of RepVideo's feature cache and gates (arXiv 2501.08994, Sec. 3).

    Args:
        window (`int`, defaults to `6`):
            Number of consecutive blocks whose outputs the feature cache aggregates. The cache is reset after every
            block whose index is a multiple of ``window`` (blocks 0, 6, 12, ... in the official CogVideoX-2B model).
            ``window=1`` makes every blend a no-op.
        gate_init (`float`, defaults to `0.5`):
            Initial value of every learned gate ``g``: the weight of the cache mean in ``g * mean + (1 - g) * h``.
            ``0.5`` is the official initialisation; ``0.0`` starts from exactly the base model (identity start
            for fine-tuning). Untrained gates at 0.5 *change* the base model's output. Must lie in ``[0, 1]``: the
            blend is a convex mix of the cache mean and the block input (training may move gates outside it).

    Example:
        ```python
        >>> RepVideoConfig(window=6, gate_init=0.0).gate_init
        0.0
        >>> RepVideoConfig(gate_init=-3)
        Traceback (most recent call last):
        ...
        ValueError: RepVideoConfig.gate_init must be a finite number in [0, 1] (the weight of the cache mean ...

        ```
    """

    window: int = 6
    gate_init: float = 0.5

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(
                f"RepVideoConfig.window must be an integer >= 1 (the number of blocks per cache window), "
                f"got {self.window!r}. Use window=6 for the official setting."
            )
        try:
            gate = float(self.gate_init)
        except (TypeError, ValueError):
            gate = float("nan")
        if not (math.isfinite(gate) and 0.0 <= gate <= 1.0):
            raise ValueError(
                "RepVideoConfig.gate_init must be a finite number in [0, 1] (the weight of the cache mean in the "
                f"convex blend g * mean + (1 - g) * h), got {self.gate_init!r}. Use gate_init=0.5 (official) or 0.0 "
                "(identity start)."
            )
        self.gate_init = gate

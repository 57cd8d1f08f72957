"""What ``repvideo train`` takes (`TrainConfig`) and what a finished run gives back (`TrainResult`).

No torch here: the command line reads the defaults and the modes without loading any model code.

Example:
    ```python
    >>> from repvideo_diffusers.training.config import TrainConfig
    >>> config = TrainConfig(data="clips/", output_dir="runs/lora", train="lora")
    >>> config.check()
    >>> config.lr  # the default of the mode
    0.0001
    >>> TrainConfig(data="clips/", output_dir="runs/x", max_steps=0).check()
    Traceback (most recent call last):
    ...
    ValueError: --max-steps must be a positive integer, got 0.

    ```
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

TRAIN_MODES = ("gates", "lora", "full")
DEFAULT_LR = {"gates": 1e-3, "lora": 1e-4, "full": 1e-5}
MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    r"""Everything ``repvideo train`` takes; the CLI flags map one to one (``--max-steps`` -> ``max_steps``).

    Args:
        data: folder with ``metadata.jsonl`` (or ``metadata.csv``), or a CSV file with ``file_name,text``.
        output_dir: where checkpoints, validation videos, logs and the final ``repvideo/`` gates go.
        model: local pipeline folder or Hub id; ``None`` is the embedded tiny CogVideoX pipeline.
        train: ``"gates"`` (base frozen, only the gates learn), ``"lora"`` (gates + LoRA via peft) or ``"full"``.
        gate_init: initial gate value; ``0.0`` starts from exactly the base model.
        resume: ``"latest"`` or a checkpoint folder; the run continues as if never interrupted.
        overwrite: start a new run in an ``output_dir`` that holds an earlier one (without it, or ``resume``, such a
            folder is refused); the earlier run is deleted only once the new one's first checkpoint is complete.
    """

    data: str
    output_dir: str
    model: str | None = None
    train: str = "gates"
    max_steps: int = 1000
    learning_rate: float | None = None  # default per mode: gates 1e-3, lora 1e-4, full 1e-5
    batch_size: int = 1  # per process
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    gate_init: float = 0.5
    window: int = 6
    gates: str | None = None  # start from saved gates instead of fresh ones
    lora_rank: int = 16
    lora_alpha: float | None = None  # default: lora_rank
    weight_decay: float = 0.0  # not 1e-2: decay would pull the gates towards 0 (the base model)
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    checkpoint_every: int = 500
    checkpoints_total_limit: int | None = None
    resume: str | None = None
    overwrite: bool = False
    seed: int = 0
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    max_sequence_length: int | None = None
    precompute_dir: str | None = None
    validation_every: int | None = None
    validation_prompt: str = "a red ball rolling across a wooden table"
    validation_steps: int | None = None  # denoising steps; default 4 for the tiny model, 50 otherwise
    log_every: int = 1
    push_to_hub: str | None = None
    report_to: str | None = "auto"  # "auto": TensorBoard when installed
    progress_bar: bool = True

    def check(self) -> None:
        """Refuse values no model accepts, before anything is loaded or written."""
        if self.train not in TRAIN_MODES:
            raise ValueError(f"--train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"--mixed-precision must be one of {', '.join(MIXED_PRECISION)}, "
                             f"got {self.mixed_precision!r}.")
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "checkpoint_every", "lora_rank",
                     "log_every", "window"):
            _require_int(name, getattr(self, name))
        for name in ("checkpoints_total_limit", "validation_every", "validation_steps", "height", "width",
                     "num_frames", "max_sequence_length"):
            if getattr(self, name) is not None:
                _require_int(name, getattr(self, name))
        if not (isinstance(self.lr_warmup_steps, int) and self.lr_warmup_steps >= 0):
            raise ValueError(f"--lr-warmup-steps must be a non-negative integer, got {self.lr_warmup_steps!r}.")
        for name in ("learning_rate", "lora_alpha"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive number, got {value!r}.")
        if not (self.max_grad_norm >= 0 and math.isfinite(self.max_grad_norm)):
            raise ValueError(f"--max-grad-norm must be a non-negative number (0 turns clipping off), "
                             f"got {self.max_grad_norm!r}.")
        if not (math.isfinite(self.gate_init) and 0 <= self.gate_init <= 1):
            raise ValueError(f"--gate-init must be in [0, 1] (0: start from the base model, 0.5: the official "
                             f"start), got {self.gate_init!r}.")
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in --out and --overwrite starts a new one there; pass one "
                             "of them, not both.")

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LR[self.train]


def _require_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}.")


@dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    gates_dir: Path
    steps: int
    final_loss: float
    losses: list[float] = field(default_factory=list)
    gates: list[float] = field(default_factory=list)
    lora_dir: Path | None = None
    transformer_dir: Path | None = None
    num_samples: int = 0
    objective: str = ""  # e.g. "diffusion (v_prediction, uniform t in [0, 1000))"
    step_time_s: float | None = None  # median wall time of one optimizer step
    num_processes: int = 1
    global_batch: int = 1  # clips per optimizer step, all processes and accumulation together
    peak_memory_mb: float | None = None  # CUDA: peak allocated; CPU: peak resident set of the process
    rank_gate_spread: float = 0.0  # largest difference between the gates of any two processes (0 under DDP)
    pipeline: object = field(default=None, repr=False)  # the trained pipeline, RepVideo (and LoRA) attached

"""Checkpoints of ``repvideo train``: where they live, which one to resume from, and how they are written and read.

A checkpoint is ``<output_dir>/checkpoints/checkpoint-<step>/``: accelerate's ``save_state`` (optimizer, learning-rate
scheduler, every RNG) with the trainable parameters only (``trainable.safetensors``: gates, LoRA; not the frozen
base model), and ``trainer_state.json`` with the step, the losses and gate history so far, and the fingerprint of
the settings that decide what each step sees. Resuming with another fingerprint is refused: the run would no
longer continue the one that was interrupted.

Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from repvideo_diffusers.training.checkpoints import list_checkpoints, resolve_resume
    >>> run = Path(tempfile.mkdtemp())
    >>> for step in (10, 2):
    ...     folder = run / "checkpoints" / f"checkpoint-{step}"
    ...     folder.mkdir(parents=True)
    ...     _ = (folder / "trainer_state.json").write_text("{}")
    >>> [p.name for p in list_checkpoints(run)]
    ['checkpoint-2', 'checkpoint-10']
    >>> resolve_resume("latest", run).name
    'checkpoint-10'

    ```
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.utils import logging

from ..utils.io import move_into_place

logger = logging.get_logger(__name__)

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
TRAINABLE_FILE = "trainable.safetensors"


@dataclass
class Progress:
    """How far a run is: the steps done, their losses, and the gate values logged so far (saved in checkpoints)."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    history_steps: list[int] = field(default_factory=list)
    history: list[list[float]] = field(default_factory=list)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """The complete checkpoints of a run, oldest first."""
    folder = Path(output_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(resume: str, output_dir: Path) -> Path | None:
    """``--resume latest`` (the newest checkpoint, or ``None`` with a warning) or a checkpoint folder."""
    output_dir = Path(output_dir)
    if resume == "latest":
        found = list_checkpoints(output_dir)
        if not found:
            logger.warning(f"--resume latest: no checkpoint in {output_dir / CHECKPOINTS}; starting from step 0.")
            return None
        return found[-1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        if path.name.startswith(".") and path.name.endswith(".partial"):
            raise ValueError(f"--resume {resume!r} is an incomplete checkpoint (its save was interrupted). Pass "
                             "'latest' or a complete checkpoint-<step> folder.")
        raise FileNotFoundError(
            f"--resume {resume!r} is not a checkpoint folder (no {STATE_FILE} in it). Pass 'latest' or a "
            f"folder like {output_dir / CHECKPOINTS / 'checkpoint-500'}."
        )
    return path


def run_fingerprint(config, *, model_id: str, global_batch: int, num_samples: int, num_frames: int, height: int,
                    width: int) -> dict:
    """The settings that decide which clips, noise and timesteps every step sees; a resume must match them."""
    return {"model": model_id, "train": config.train, "global_batch": global_batch,
            "gradient_accumulation_steps": config.gradient_accumulation_steps, "seed": config.seed,
            "num_samples": num_samples, "num_frames": num_frames, "height": height, "width": width}


def register_trainable_hooks(accelerator, transformer) -> None:
    """Make accelerate's ``save_state`` / ``load_state`` keep only the trainable parameters of ``transformer``.

    Without the hooks accelerate would save the whole transformer in every checkpoint, frozen weights included.
    """
    from safetensors.torch import load_file, save_file

    trainable_names = [n for n, p in transformer.named_parameters() if p.requires_grad]

    def save_trainable(models, weights, folder):
        if accelerator.is_main_process:
            state = {n: p.detach().float().cpu().contiguous() for n, p in transformer.named_parameters() if p.requires_grad}
            save_file(state, os.path.join(folder, TRAINABLE_FILE))
        weights.clear()  # accelerate would otherwise save the whole transformer again

    def load_trainable(models, folder):
        models.clear()
        state = load_file(os.path.join(folder, TRAINABLE_FILE))
        missing = sorted(set(trainable_names) - set(state))
        if missing:
            raise ValueError(
                f"Checkpoint {folder} does not hold trainable parameters of this run ({missing[:3]}...): it was saved "
                f"with another --train mode or model. Resume with the settings it was written with."
            )
        named = dict(transformer.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                named[name].copy_(value)

    accelerator.register_save_state_pre_hook(save_trainable)
    accelerator.register_load_state_pre_hook(load_trainable)


def resume(accelerator, checkpoint: Path, fingerprint: dict) -> Progress:
    """Check ``checkpoint`` was written by a run with the same ``fingerprint``, load its state, return its progress."""
    state = json.loads((checkpoint / STATE_FILE).read_text())
    different = {k: (state["run"].get(k), v) for k, v in fingerprint.items() if state["run"].get(k) != v}
    if different:
        raise ValueError(
            f"Cannot resume from {checkpoint}: it was written with different settings "
            f"({', '.join(f'{k}: {old} there, {new} now' for k, (old, new) in different.items())}). "
            "Resume with the same settings, or start a new run (a new --out, or --overwrite)."
        )
    accelerator.load_state(str(checkpoint))
    logger.info(f"Resumed from {checkpoint} at step {state['step']}.")
    return Progress(step=state["step"], losses=state["losses"], history_steps=state["gate_history_steps"],
                    history=state["gate_history"])


def save_checkpoint(accelerator, output_dir: Path, progress: Progress, fingerprint: dict, *, samples_seen: int,
                    total_limit: int | None = None) -> None:
    """Write ``checkpoint-<step>`` atomically from every process, then keep only the newest ``total_limit``.

    Every process writes its own RNG state into the folder, so the staging folder has a name all of them know
    (``.checkpoint-<step>.partial``) rather than a random one; the main process moves it into place when complete.
    """
    folder = Path(output_dir) / CHECKPOINTS / f"checkpoint-{progress.step}"
    staging = folder.with_name(f".{folder.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    try:
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"step": progress.step, "samples_seen": samples_seen, "losses": progress.losses,
                     "gate_history_steps": progress.history_steps, "gate_history": progress.history,
                     "run": fingerprint}
            (staging / STATE_FILE).write_text(json.dumps(state))
            move_into_place(staging, folder)
            if total_limit:
                for old in list_checkpoints(output_dir)[:-total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
    finally:  # an error or Ctrl-C while saving leaves no half-written checkpoint behind
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()

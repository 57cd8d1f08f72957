"""What ``repvideo train`` writes besides checkpoints: validation videos during the run, and at its end the gates
folder (weights, model card, gate figure), the LoRA or full transformer, ``train_summary.json`` and the Hub upload.

Every folder is written beside its destination and moved into place when complete (`repvideo_diffusers.utils.io`),
so an interrupted save leaves the previous result as it was.

Example:
    ```python
    >>> from pathlib import Path
    >>> from repvideo_diffusers.training.config import TrainConfig, TrainResult
    >>> from repvideo_diffusers.training.outputs import card_text
    >>> result = TrainResult(output_dir=Path("runs/x"), gates_dir=Path("runs/x/repvideo"), steps=12, final_loss=0.25,
    ...                      num_samples=3, objective="flow matching")
    >>> text = card_text(TrainConfig(data="clips/", output_dir="runs/x"), result, "tiny")
    >>> "| steps | 12 |" in text and "| learning rate | 0.001 |" in text
    True

    ```
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers.utils import logging

from ..utils.io import staged_file, staged_folder
from .config import TrainConfig, TrainResult

logger = logging.get_logger(__name__)

_MODES = {"gates": "gates only (base weights frozen)", "lora": "gates + LoRA (peft)", "full": "all weights"}


def write_validation_video(pipe, accelerator, config: TrainConfig, at_step: int, *, height: int, width: int,
                           num_frames: int, max_sequence_length: int) -> Path:
    """Generate ``config.validation_prompt`` with the transformer as trained so far; returns the mp4 path.

    The text encoder, parked on the CPU while training, visits the training device for the call.
    """
    from ..generation import pipeline_call
    from ..utils.video import write_video

    transformer = pipe.transformer
    transformer.eval()
    if pipe.text_encoder is not None:
        pipe.text_encoder.to(accelerator.device)
    call = pipeline_call(pipe, {
        "prompt": config.validation_prompt, "height": height, "width": width, "frames": num_frames,
        "num_inference_steps": config.validation_steps or (4 if config.model is None else 50),
        "generator": torch.Generator().manual_seed(config.seed), "output_type": "np",
        "max_sequence_length": max_sequence_length,
    })
    with torch.no_grad(), accelerator.autocast():
        frames = pipe(**call).frames[0]
    path = Path(config.output_dir) / "validation" / f"step-{at_step:06d}.mp4"
    with staged_file(path) as staging:
        write_video(frames, staging, fps=8)
    if pipe.text_encoder is not None:
        pipe.text_encoder.to("cpu")
    transformer.train()
    logger.info(f"Validation video at step {at_step}: {path}")
    return path


def card_text(config: TrainConfig, result: TrainResult, model_id: str) -> str:
    """The training section of the gates' model card (a local base model is named by its folder name only: a card
    is for sharing, and a path of this machine means nothing elsewhere)."""
    from ..core.card import hub_id

    base = hub_id(model_id) or f"{Path(str(model_id)).name} (a local model)"
    return f"""
## Training

Trained with `repvideo train` (repvideo-diffusers):

| | |
|---|---|
| base model | `{base}` |
| trained | {_MODES[config.train]} |
| training clips | {result.num_samples} |
| steps | {result.steps} |
| objective | {result.objective} |
| learning rate | {config.lr:g} |
| global batch | {result.global_batch} ({config.batch_size} per process x {result.num_processes} processes x {config.gradient_accumulation_steps} accumulation) |
| gate init | {config.gate_init:g} |
| final loss | {result.final_loss:.6f} |

![gate values](gates.png)
"""


def save_gates(gates, config: TrainConfig, result: TrainResult, model_id: str, history_steps, history) -> None:
    """``<output_dir>/repvideo/``: the gates, their model card and the figure of their values over the run."""
    from ..utils.plotting import plot_gates

    with staged_folder(result.gates_dir) as staging:
        gates.save_pretrained(staging, model_card_text=card_text(config, result, model_id))
        plot_gates(result.gates, staging / "gates.png", window=gates.config.window, history_steps=history_steps,
                   history=history)


def save_lora(pipe, output_dir: Path) -> None:
    """``<output_dir>/lora/``: the LoRA weights in the pipeline's own format (``pipe.load_lora_weights`` reads it).

    The adapter's peft config (rank, alpha, targets) goes into the safetensors metadata: without it diffusers
    assumes ``alpha == rank``, and a LoRA trained with ``--lora-alpha`` would load with the wrong scale.
    """
    from peft.utils import get_peft_model_state_dict

    lora = {k: v.float() for k, v in get_peft_model_state_dict(pipe.transformer).items()}
    metadata = pipe.transformer.peft_config["default"].to_dict()
    with staged_folder(output_dir / "lora") as staging:
        type(pipe).save_lora_weights(staging, transformer_lora_layers=lora, transformer_lora_adapter_metadata=metadata)


def save_transformer(transformer, gates, output_dir: Path) -> None:
    """``<output_dir>/transformer/``: the fully trained transformer in its base format, RepVideo taken off."""
    from ..core import apply_repvideo, remove_repvideo

    with staged_folder(output_dir / "transformer") as staging:
        remove_repvideo(transformer)  # the base transformer's own format, gates saved apart in repvideo/
        try:
            transformer.save_pretrained(staging)
        finally:
            apply_repvideo(transformer, gates)  # the returned pipeline keeps RepVideo, as in the other modes


def write_summary(config: TrainConfig, result: TrainResult) -> None:
    """``<output_dir>/train_summary.json``: the figures of the run, machine-readable."""
    summary = {"steps": result.steps, "final_loss": result.final_loss, "gates": result.gates,
               "num_samples": result.num_samples, "learning_rate": config.lr, "objective": result.objective,
               "train": config.train, "median_step_time_s": result.step_time_s, "num_processes": result.num_processes,
               "global_batch": result.global_batch, "rank_gate_spread": result.rank_gate_spread,
               "peak_memory_mb": result.peak_memory_mb, "losses": result.losses}
    with staged_file(result.output_dir / "train_summary.json") as staging:
        Path(staging).write_text(json.dumps(summary, indent=2))


def push_to_hub(repo: str, config: TrainConfig, result: TrainResult) -> None:
    """Upload the gates folder (and the LoRA, in ``lora/``) to the Hub repository ``repo``."""
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(repo, exist_ok=True).repo_id
    upload_folder(repo_id=repo_id, folder_path=str(result.gates_dir), commit_message="Upload RepVideo gates")
    if config.train == "lora":
        upload_folder(repo_id=repo_id, folder_path=str(result.output_dir / "lora"), path_in_repo="lora",
                      commit_message="Upload LoRA trained with the gates")
    logger.info(f"Pushed to https://huggingface.co/{repo_id}")


def save_outputs(pipe, gates, config: TrainConfig, result: TrainResult, model_id: str, history_steps,
                 history) -> None:
    """Everything a finished run leaves in ``result.output_dir`` (main process only), then the Hub upload."""
    result.output_dir.mkdir(parents=True, exist_ok=True)
    save_gates(gates, config, result, model_id, history_steps, history)
    if config.train == "lora":
        save_lora(pipe, result.output_dir)
    if config.train == "full":
        save_transformer(pipe.transformer, gates, result.output_dir)
    write_summary(config, result)
    if config.push_to_hub:
        push_to_hub(config.push_to_hub, config, result)

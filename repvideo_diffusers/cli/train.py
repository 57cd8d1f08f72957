"""``repvideo train``: train RepVideo gates on a folder of captioned videos (also ``examples/train_repvideo.py``).

Single process::

    repvideo train --data clips/ --out runs/gates --max-steps 1000

Several GPUs (DDP), or two CPU processes over gloo for a smoke test (``accelerate launch --cpu`` starts a single
process, so CPU runs go through torchrun with ``ACCELERATE_USE_CPU``)::

    accelerate launch --multi_gpu --num_processes 2 -m repvideo_diffusers train --data clips/ --out runs/gates
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m repvideo_diffusers train --data clips/ --out runs/cpu
"""

from __future__ import annotations

import argparse
import sys

from ..training.config import MIXED_PRECISION, TRAIN_MODES, TrainConfig
from ._common import add_alias, add_parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig.__dataclass_fields__
    parser.add_argument("--data", required=True, help="folder with metadata.jsonl (file_name, text) or a CSV file")
    parser.add_argument("--out", dest="output_dir", required=True,
                        help="output folder: checkpoints, validation videos, logs and repvideo/ gates")
    add_alias(parser, "--output-dir", "--out")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out folder (to continue a run instead, use --resume)")
    parser.add_argument("--model", default=None, help="pipeline folder or Hub id (default: embedded tiny CogVideoX)")
    parser.add_argument("--train", choices=TRAIN_MODES, default="gates",
                        help="gates: base frozen, only gates learn (default); lora: gates + LoRA; full: all weights")
    parser.add_argument("--max-steps", type=int, default=d["max_steps"].default, help="optimizer steps (default 1000)")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="default: 1e-3 for gates, 1e-4 for lora, 1e-5 for full")
    parser.add_argument("--batch-size", type=int, default=1, help="clips per process per micro-step (default 1)")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1, help="micro-steps per step (default 1)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save memory")
    parser.add_argument("--mixed-precision", choices=MIXED_PRECISION, default="no",
                        help="autocast precision (default no; bf16 on recent GPUs)")
    parser.add_argument("--gate-init", type=float, default=0.5, help="initial gates; 0 = start from the base model")
    parser.add_argument("--window", type=int, default=6, help="feature-cache window (default 6, the official)")
    parser.add_argument("--gates", default=None, help="start from saved gates (folder or Hub id) instead of fresh ones")
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rank for --train lora (default 16)")
    parser.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: the rank)")
    parser.add_argument("--lr-scheduler", default="constant", help="diffusers.optimization scheduler (default constant)")
    parser.add_argument("--lr-warmup-steps", type=int, default=0, help="warm-up steps (default 0)")
    parser.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping, 0 = off (default 1)")
    parser.add_argument("--checkpoint-every", type=int, default=500, help="checkpoint every N steps (default 500)")
    parser.add_argument("--checkpoints-total-limit", type=int, default=None, help="keep only the newest N checkpoints")
    parser.add_argument("--resume", default=None, metavar="latest|PATH", help="continue from a checkpoint")
    parser.add_argument("--seed", type=int, default=0, help="seed of data order, noise and timesteps (default 0)")
    parser.add_argument("--height", type=int, default=None, help="training height (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="training width (default: the model's)")
    parser.add_argument("--num-frames", type=int, default=None,
                        help="frames per clip: 1 + 4k CogVideoX/Wan/HunyuanVideo, 1 + 8k LTX-Video, 1 + 6k Mochi "
                             "(default: the model's)")
    parser.add_argument("--max-sequence-length", type=int, default=None, help="text tokens (default: the model's)")
    parser.add_argument("--precompute-dir", default=None,
                        help="save VAE latents and prompt embeddings here (safetensors) and reuse them next time")
    parser.add_argument("--validation-every", type=int, default=None, help="write a validation video every N steps")
    parser.add_argument("--validation-prompt", default=d["validation_prompt"].default, help="prompt of validation videos")
    parser.add_argument("--validation-steps", type=int, default=None, help="denoising steps of validation videos")
    parser.add_argument("--log-every", type=int, default=1, help="log loss and gates every N steps (default 1)")
    parser.add_argument("--report-to", default="auto", help="accelerate tracker (default: tensorboard when installed)")
    parser.add_argument("--push-to-hub", default=None, metavar="REPO", help="upload the gates (and LoRA) to this repo")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of parsed ``repvideo train`` arguments (``--report-to none`` turns trackers off).

    Example:
        ```python
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="repvideo train")
        >>> add_arguments(parser)
        >>> config = config_from_args(parser.parse_args(["--data", "clips/", "--out", "runs/a",
        ...                                              "--train", "lora", "--report-to", "none"]))
        >>> config.train, config.max_steps, config.lr, config.report_to
        ('lora', 1000, 0.0001, None)

        ```
    """
    names = set(TrainConfig.__dataclass_fields__)
    values = {k: v for k, v in vars(args).items() if k in names}
    if values.get("report_to") in ("none", ""):
        values["report_to"] = None
    return TrainConfig(**values)


def run(args: argparse.Namespace) -> int:
    from ..training import train

    result = train(config_from_args(args))
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(f"trained {result.steps} steps on {result.num_samples} clips, final loss {result.final_loss:.6f}; "
              f"gates in {result.gates_dir}")
    return 0


def register(subparsers) -> None:
    parser = add_parser(
        subparsers, "train", help="train RepVideo gates (or gates + LoRA, or all weights) with accelerate",
        description="Train RepVideo gates on a folder of captioned videos. Works under `accelerate launch` for "
        "several GPUs. Without --model it trains the embedded tiny CogVideoX pipeline (CPU, seconds).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv=None) -> int:
    """Entry point of ``examples/train_repvideo.py``: the same parser and code path as ``repvideo train``."""
    from . import main as repvideo_main

    return repvideo_main(["train", *(sys.argv[1:] if argv is None else argv)])

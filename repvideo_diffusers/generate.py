"""``repvideo generate``: text-to-video with RepVideo enabled, on the embedded tiny model by default."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate a video with RepVideo enabled",
        description="Generate a video from a text prompt with RepVideo enabled. Without --model it runs the "
        "embedded tiny CogVideoX pipeline (random weights, offline, seconds on a CPU).",
    )
    parser.add_argument("prompt", help="text prompt")
    parser.add_argument("--out", default="repvideo.mp4", help="output mp4 path (default: repvideo.mp4)")
    parser.add_argument("--model", default=None, help="local pipeline folder or Hub id (default: embedded tiny CogVideoX)")
    parser.add_argument("--gates", default=None, help="gates folder or Hub id (default: gates saved with the model, else fresh gates)")
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 4 for the tiny model, 50 otherwise)")
    parser.add_argument("--frames", type=int, default=None, help="frames; CogVideoX needs 1 + 4k (default: the model's)")
    parser.add_argument("--height", type=int, default=None, help="height in pixels (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="width in pixels (default: the model's)")
    parser.add_argument("--guidance-scale", type=float, default=6.0, help="classifier-free guidance scale (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second of the mp4 (default 8)")
    parser.add_argument("--no-repvideo", action="store_true", help="run the base model without RepVideo")
    parser.set_defaults(func=run)


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"--{name} must be a positive integer, got {value}.")


def load_pipeline(model: str | None, dtype: torch.dtype):
    """The embedded tiny pipeline (model None) or `DiffusionPipeline.from_pretrained(model)`."""
    from diffusers import DiffusionPipeline

    from .tiny import load_tiny_pipeline

    if model is None:
        return load_tiny_pipeline(dtype=dtype)
    if not Path(model).exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise FileNotFoundError(
            f"--model {model!r}: no such folder, and it is not a Hub id of the form 'owner/name'. "
            "Pass a local diffusers pipeline folder (with model_index.json) or a Hub id."
        )
    if Path(model).is_dir() and not (Path(model) / "model_index.json").is_file():
        raise ValueError(
            f"--model {model!r} is a folder without model_index.json, so it is not a diffusers pipeline folder. "
            "Point --model at the folder that holds model_index.json."
        )
    return DiffusionPipeline.from_pretrained(model, dtype=dtype)


def run(args: argparse.Namespace) -> int:
    import repvideo_diffusers  # noqa: F401 - adds enable_repvideo to pipelines

    from .tiny import TINY_TEXT_LENGTH
    from .video import write_video

    for name in ("steps", "frames", "height", "width"):
        _check_positive(name, getattr(args, name))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = _DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    pipe = load_pipeline(args.model, dtype)

    # Frame counts the VAE can encode: 1 + k * temporal compression (1 + 4k for CogVideoX, Wan, ...).
    temporal = getattr(pipe, "vae_scale_factor_temporal", None)
    if args.frames is not None and temporal and (args.frames - 1) % temporal:
        lower = (args.frames - 1) // temporal * temporal + 1
        raise ValueError(
            f"--frames must be 1 + {temporal}k for this model, got {args.frames}. "
            f"Use --frames {lower} or --frames {lower + temporal}."
        )
    spatial = getattr(pipe, "vae_scale_factor_spatial", None) or getattr(pipe, "vae_scale_factor", None)
    for name in ("height", "width"):
        value = getattr(args, name)
        if value is not None and spatial and value % (spatial * 2):
            raise ValueError(f"--{name} must be a multiple of {spatial * 2} for this model, got {value}.")

    if not args.no_repvideo:
        pipe.enable_repvideo(args.gates)
    elif args.gates:
        raise ValueError("--gates and --no-repvideo contradict each other: drop one of them.")
    pipe.to(device)

    call = {
        "prompt": args.prompt,
        "num_inference_steps": args.steps or (4 if args.model is None else 50),
        "guidance_scale": args.guidance_scale,
        "generator": torch.Generator(device="cpu").manual_seed(args.seed),
        "output_type": "np",
    }
    for name, key in (("frames", "num_frames"), ("height", "height"), ("width", "width")):
        if getattr(args, name) is not None:
            call[key] = getattr(args, name)
    if args.model is None:
        call["max_sequence_length"] = TINY_TEXT_LENGTH
    started = time.perf_counter()
    frames = pipe(**call).frames[0]
    elapsed = time.perf_counter() - started

    out = Path(args.out)
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True)
    write_video(frames, out, fps=args.fps)
    mode = "without RepVideo" if args.no_repvideo else "with RepVideo"
    print(f"wrote {out} ({len(frames)} frames, {frames.shape[2]}x{frames.shape[1]}, {mode}, {elapsed:.1f}s on {device})")
    return 0

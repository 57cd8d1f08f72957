"""``repvideo generate``: text-to-video with RepVideo enabled, on the embedded tiny model by default.

One prompt (``repvideo generate "a cat" --out cat.mp4``) or a file of prompts, one per line
(``repvideo generate --prompts prompts.txt --out videos/``), which writes ``videos/0000.mp4``, ``videos/0001.mp4``, ...
(numbered by line among the non-empty lines; prompt ``k`` uses seed ``--seed + k``). Under ``accelerate launch`` the
prompts are split between the processes with ``PartialState.split_between_processes``: each process writes its own
share, so every video is written exactly once, and the files do not depend on the number of processes::

    accelerate launch --multi_gpu --num_processes 4 -m repvideo_diffusers generate --prompts prompts.txt --out videos/

(on a machine without GPUs the same command runs the processes on the CPU over gloo).
"""

from __future__ import annotations

import argparse
import os
import tempfile
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
    parser.add_argument("prompt", nargs="?", default=None, help="text prompt (or use --prompts FILE)")
    parser.add_argument("--prompts", default=None, metavar="FILE",
                        help="text file with one prompt per line; writes OUT/0000.mp4, OUT/0001.mp4, ... and splits "
                        "the prompts between processes under `accelerate launch`")
    parser.add_argument("--out", default=None,
                        help="output mp4 path (default: repvideo.mp4); with --prompts a folder (default: repvideo-videos)")
    add_pipeline_arguments(parser)
    parser.add_argument("--fps", type=float, default=8.0, help="frames per second of the mp4 (default 8)")
    parser.add_argument("--no-repvideo", action="store_true", help="run the base model without RepVideo")
    parser.set_defaults(func=run)


def add_pipeline_arguments(parser, gates_help: str = "gates folder or Hub id (default: gates saved with the model, "
                           "else fresh gates)") -> None:
    """The options every command that runs a pipeline shares (`generate`, `analyze`)."""
    parser.add_argument("--model", default=None, help="local pipeline folder or Hub id (default: embedded tiny CogVideoX)")
    parser.add_argument("--gates", default=None, help=gates_help)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default: 4 for the tiny model, 50 otherwise)")
    parser.add_argument("--frames", type=int, default=None, help="frames; CogVideoX needs 1 + 4k (default: the model's)")
    parser.add_argument("--height", type=int, default=None, help="height in pixels (default: the model's)")
    parser.add_argument("--width", type=int, default=None, help="width in pixels (default: the model's)")
    parser.add_argument("--guidance-scale", type=float, default=6.0, help="classifier-free guidance scale (default 6)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--attention", choices=("auto", "xformers", "sdpa"), default=None,
                        help="attention kernel: xformers or PyTorch SDPA; 'auto' picks xformers where it runs "
                        "(default: the model's stock processors)")


def check_pipeline_arguments(args: argparse.Namespace) -> None:
    """Fail fast on option values that no model accepts."""
    for name in ("steps", "frames", "height", "width"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be a positive integer, got {value}.")
    if args.no_repvideo and args.gates:
        raise ValueError("--gates and --no-repvideo contradict each other: drop one of them.")


def default_dtype(dtype: str | None, device: str) -> torch.dtype:
    return _DTYPES[dtype] if dtype else (torch.bfloat16 if device.startswith("cuda") else torch.float32)


def prepare_pipeline(args: argparse.Namespace, dtype: torch.dtype):
    """Load the pipeline and check the size options against it; returns (pipeline, pipeline call arguments)."""
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
    call = {
        "num_inference_steps": args.steps or (4 if args.model is None else 50),
        "guidance_scale": args.guidance_scale,
    }
    for name, key in (("frames", "num_frames"), ("height", "height"), ("width", "width")):
        if getattr(args, name) is not None:
            call[key] = getattr(args, name)
    # The text length the transformer was built for (226 for CogVideoX), where the model states one.
    text_length = getattr(getattr(pipe, "transformer", None), "config", {}).get("max_text_seq_length")
    if text_length:
        call["max_sequence_length"] = text_length
    return pipe, call


def set_attention(pipe, backend: str | None) -> None:
    """Apply `--attention` once the pipeline is on its final device (the xformers probe runs there)."""
    if backend:
        from .attention import set_attention_kernel

        print(f"attention backend: {set_attention_kernel(pipe.transformer, backend)}")


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


def read_prompts(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a prompts file, stripped, in order (their position is the video's number)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts {str(path)!r}: no such file. Pass a text file with one prompt per line.")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts {str(path)!r} holds no prompt (only empty lines). Write one prompt per line.")
    return prompts


def _write_atomically(frames, out: Path, fps: float) -> None:
    """Write the mp4 beside its destination, then move it into place: no half-written video under the final name."""
    from .utils.video import write_video

    out.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=out.suffix or ".mp4", dir=out.parent)
    os.close(handle)
    try:
        write_video(frames, staging, fps=fps)
        os.replace(staging, out)
    finally:
        if os.path.exists(staging):
            os.remove(staging)


def _jobs(args: argparse.Namespace) -> list[tuple[int, str, Path]]:
    """(index, prompt, output path) for every video of this command, before any split between processes."""
    if args.prompt is not None and args.prompts is not None:
        raise ValueError("Give either a prompt or --prompts FILE, not both.")
    if args.prompts is None:
        if args.prompt is None:
            raise ValueError("No prompt: pass a text prompt, or --prompts FILE with one prompt per line.")
        return [(0, args.prompt, Path(args.out or "repvideo.mp4"))]
    prompts = read_prompts(args.prompts)
    out_dir = Path(args.out or "repvideo-videos")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; with --prompts, --out is the folder for the videos.")
    if out_dir.suffix.lower() == ".mp4":
        raise ValueError(f"--out {str(out_dir)!r} looks like a video file; with --prompts, --out names a folder.")
    digits = max(4, len(str(len(prompts) - 1)))
    return [(index, prompt, out_dir / f"{index:0{digits}d}.mp4") for index, prompt in enumerate(prompts)]


def run(args: argparse.Namespace) -> int:
    import repvideo_diffusers  # noqa: F401 - adds enable_repvideo to pipelines
    from accelerate import PartialState

    check_pipeline_arguments(args)
    jobs = _jobs(args)
    # A single process without `accelerate launch` gets a plain PartialState: no process group, no change. Without
    # an accelerator (or with --device cpu) the processes must talk over gloo, which accelerate only picks when
    # told `cpu=True`; `accelerate launch --cpu` itself starts one process, so `--multi_gpu` is the launcher to use.
    on_cpu = (args.device or "").startswith("cpu") or not torch.accelerator.is_available()
    state = PartialState(cpu=on_cpu)
    if state.num_processes > 1 and args.device in (None, "cuda"):
        device = str(state.device)  # one GPU per process (cuda:<local rank>), not all of them on cuda:0
    else:
        device = args.device
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    pipe, call = prepare_pipeline(args, default_dtype(args.dtype, device))
    if not args.no_repvideo:
        pipe.enable_repvideo(args.gates)
    pipe.to(device)
    set_attention(pipe, args.attention)
    call["output_type"] = "np"
    mode = "without RepVideo" if args.no_repvideo else "with RepVideo"
    rank = f" [process {state.process_index}/{state.num_processes}]" if state.num_processes > 1 else ""
    with state.split_between_processes(jobs) as my_jobs:
        for index, prompt, out in my_jobs:
            # Seed by prompt number, not by process: the videos are the same however many processes share them.
            generator = torch.Generator(device="cpu").manual_seed(args.seed + index)
            started = time.perf_counter()
            frames = pipe(prompt=prompt, generator=generator, **call).frames[0]
            elapsed = time.perf_counter() - started
            _write_atomically(frames, out, fps=args.fps)
            if args.frames is not None and len(frames) != args.frames:
                # e.g. CogVideoX 1.0's VAE decodes an even number of latent frames to 4x as many frames
                print(f"note: asked for {args.frames} frames, the model returned {len(frames)}")
            print(f"wrote {out} ({len(frames)} frames, {frames.shape[2]}x{frames.shape[1]}, {mode}, "
                  f"{elapsed:.1f}s on {device}){rank}", flush=True)
    state.wait_for_everyone()
    return 0

"""``repvideo generate``: text-to-video with RepVideo enabled, on the embedded tiny model by default.

One prompt (``repvideo generate "a cat" --out cat.mp4``) or a file of prompts, one per line
(``repvideo generate --prompts prompts.txt --out videos/``), which writes ``videos/0000.mp4``, ``videos/0001.mp4``, ...
(numbered by line among the non-empty lines; prompt ``k`` uses seed ``--seed + k``). Under ``accelerate launch`` the
prompts are split between the processes, each writing its own share::

    accelerate launch --multi_gpu --num_processes 4 -m repvideo_diffusers generate --prompts prompts.txt --out videos/

(on a machine without GPUs the same command runs the processes on the CPU over gloo). The work is done by
`repvideo_diffusers.generation`; this module parses the options, which ``repvideo analyze`` shares
(`add_pipeline_arguments`, `check_pipeline_arguments`).
"""

from __future__ import annotations

import argparse

from ..utils.dtypes import DTYPES, default_dtype


def register(subparsers) -> None:
    """Add the ``generate`` command to the ``repvideo`` parser.

    Example:
        ```python
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="repvideo")
        >>> register(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["generate", "a cat", "--steps", "2"])
        >>> args.prompt, args.steps, args.fps, args.func.__name__
        ('a cat', 2, 8.0, 'run')

        ```
    """
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
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on CUDA, fp32 on CPU")
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


def run(args: argparse.Namespace) -> int:
    import repvideo_diffusers  # noqa: F401 - adds enable_repvideo to pipelines

    from ..generation import generate_videos, prepare_pipeline, process_state, set_attention, video_jobs

    check_pipeline_arguments(args)
    jobs = video_jobs(args.prompt, args.prompts, args.out)
    state, device = process_state(args.device)
    pipe, call = prepare_pipeline(args, default_dtype(args.dtype, device))
    if not args.no_repvideo:
        pipe.enable_repvideo(args.gates)
    pipe.to(device)
    set_attention(pipe, args.attention)
    generate_videos(pipe, jobs, call, fps=args.fps, seed=args.seed, state=state, repvideo=not args.no_repvideo,
                    device=device)
    return 0

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

from ._common import (add_device_arguments, add_out_argument, add_parser, check_dtype, check_model_source,
                      check_output_file, check_output_folder, finite, positive, resolve_device)


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
    parser = add_parser(
        subparsers, "generate",
        help="generate a video with RepVideo enabled",
        description="Generate a video from a text prompt with RepVideo enabled. Without --model it runs the "
        "embedded tiny CogVideoX pipeline (random weights, offline, seconds on a CPU).",
    )
    parser.add_argument("prompt", nargs="?", default=None, help="text prompt (or use --prompts FILE)")
    parser.add_argument("--prompts", default=None, metavar="FILE",
                        help="text file with one prompt per line; writes OUT/0000.mp4, OUT/0001.mp4, ... and splits "
                        "the prompts between processes under `accelerate launch` (default: none, the one PROMPT given)")
    add_out_argument(parser, "output mp4 path (default: repvideo.mp4); with --prompts a folder (default: "
                     "repvideo-videos)")
    add_pipeline_arguments(parser)
    parser.add_argument("--fps", type=positive(float), default=8.0, help="frames per second of the mp4 (default 8)")
    parser.add_argument("--no-repvideo", action="store_true", help="run the base model without RepVideo")
    parser.set_defaults(func=run)


def add_pipeline_arguments(parser, gates_help: str = "gates folder or Hub id (default: gates saved with the model, "
                           "else fresh gates)") -> None:
    """The options every command that runs a pipeline shares (`generate`, `analyze`, `compare`)."""
    parser.add_argument("--model", default=None, help="local pipeline folder or Hub id (default: embedded tiny CogVideoX)")
    parser.add_argument("--gates", default=None, help=gates_help)
    parser.add_argument("--steps", type=positive(int), default=None,
                        help="denoising steps (default: 4 for the tiny model, 50 otherwise)")
    parser.add_argument("--frames", type=positive(int), default=None,
                        help="frames; 1 + 4k for most models, 1 + 8k for LTX-Video (default: the model's)")
    parser.add_argument("--height", type=positive(int), default=None, help="height in pixels (default: the model's)")
    parser.add_argument("--width", type=positive(int), default=None, help="width in pixels (default: the model's)")
    parser.add_argument("--guidance-scale", type=positive(float, allow_zero=True), default=6.0,
                        help="classifier-free guidance scale; <= 1 turns guidance off (default 6)")
    parser.add_argument("--seed", type=positive(int, allow_zero=True), default=0, help="random seed (default 0)")
    add_device_arguments(parser)
    parser.add_argument("--attention", choices=("auto", "xformers", "sdpa"), default=None,
                        help="attention kernel: xformers or PyTorch SDPA; 'auto' picks xformers where it runs "
                        "(default: the model's stock processors)")


def check_pipeline_arguments(args: argparse.Namespace) -> str:
    """Check the shared pipeline options before anything is loaded; returns the device to run on."""
    if getattr(args, "no_repvideo", False) and args.gates:
        raise ValueError("--gates and --no-repvideo contradict each other: drop one of them.")
    check_model_source(args.model, "--model")
    if args.gates is not None:
        check_model_source(args.gates, "--gates", marker="config.json", what="a RepVideo gates folder")
    device = resolve_device(args.device)
    check_dtype(args.dtype, device)
    return device


def run(args: argparse.Namespace) -> int:
    device = check_pipeline_arguments(args)
    if args.prompts is None:
        check_output_file(args.out or "repvideo.mp4", args.overwrite, suffixes=(".mp4",))
    else:
        check_output_folder(args.out or "repvideo-videos", args.overwrite)

    from .. import install
    from ..generation import generate_videos, prepare_pipeline, process_state, set_attention, video_jobs
    from ..utils.dtypes import default_dtype

    install()
    jobs = video_jobs(args.prompt, args.prompts, args.out)
    state, device = process_state(device)
    pipe, call = prepare_pipeline(args, default_dtype(args.dtype, device))
    if not args.no_repvideo:
        pipe.enable_repvideo(args.gates)
    pipe.to(device)
    set_attention(pipe, args.attention)
    generate_videos(pipe, jobs, call, fps=args.fps, seed=args.seed, state=state, repvideo=not args.no_repvideo,
                    device=device)
    return 0

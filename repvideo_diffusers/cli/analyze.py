"""``repvideo analyze``: the parser and a `run` that calls `repvideo_diffusers.analysis`."""

from __future__ import annotations

import argparse

from ._common import add_out_argument, add_parser, check_output_folder
from .generate import add_pipeline_arguments, check_pipeline_arguments

DEFAULT_OUT = "repvideo-analysis"


def register(subparsers) -> None:
    parser = add_parser(
        subparsers, "analyze",
        help="the paper's diagnostics: cross-layer attention similarity, adjacent-frame similarity, gates",
        description="Run a video pipeline without and with RepVideo and write the RepVideo paper's diagnostics: "
        "a layer x layer attention-map similarity per denoising step, the adjacent-frame feature similarity "
        "after each block, and the gates, as PNG figures plus analysis.json. Without --model it runs the "
        "embedded tiny CogVideoX pipeline (random weights, offline, seconds on a CPU).",
    )
    parser.add_argument("prompt", nargs="?", default=None,
                        help="text prompt (default: repvideo_diffusers.analysis.DEFAULT_PROMPT, a fox in the snow)")
    add_out_argument(parser, f"output folder (default: {DEFAULT_OUT})", default=DEFAULT_OUT)
    add_pipeline_arguments(parser, gates_help="gates folder or Hub id for the RepVideo run (default: gates saved "
                           "with the model, else fresh gates)")
    parser.add_argument("--queries", default="frames",
                        help="query tokens whose attention is recorded: 'frames' (one per latent frame) or comma-separated token indices")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--no-base", action="store_true", help="only the RepVideo run")
    runs.add_argument("--no-repvideo", action="store_true", help="only the run without RepVideo")
    parser.set_defaults(func=run)


def _parse_queries(text: str):
    if text == "frames":
        return "frames"
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        indices = []
    if not indices or min(indices) < 0:
        raise ValueError(f"--queries must be 'frames' or comma-separated token indices like 0,120,240 (non-negative); "
                         f"got {text!r}.")
    return indices


def run(args: argparse.Namespace) -> int:
    device = check_pipeline_arguments(args)
    queries = _parse_queries(args.queries)
    check_output_folder(args.out, args.overwrite)

    from .. import install
    from ..analysis import DEFAULT_PROMPT, analyze, format_summary, save_report
    from ..generation import prepare_pipeline, set_attention
    from ..utils.dtypes import default_dtype

    install()
    pipe, call = prepare_pipeline(args, default_dtype(args.dtype, device))
    pipe.to(device)
    set_attention(pipe, args.attention)
    runs = ("repvideo",) if args.no_base else ("base",) if args.no_repvideo else ("base", "repvideo")
    report = analyze(
        pipe, args.prompt or DEFAULT_PROMPT, gates=args.gates, runs=runs, queries=queries, seed=args.seed, **call,
    )
    paths = save_report(report, args.out)
    print(format_summary(report))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0

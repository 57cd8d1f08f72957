"""``repvideo compare``: one prompt generated without and with RepVideo from the same seed, written side by side
(left: without, right: with) plus a PNG of the adjacent-frame feature similarity per latent frame for both runs.
The work is done by `repvideo_diffusers.analysis.compare`; this module parses and checks the options, which are
``repvideo generate``'s pipeline options (`add_pipeline_arguments`) plus ``--out``, ``--overwrite`` and ``--fps``.
"""

from __future__ import annotations

import argparse

from ._common import add_out_argument, add_parser, check_output_file, positive
from .generate import add_pipeline_arguments, check_pipeline_arguments

DEFAULT_OUT = "repvideo-compare.mp4"


def register(subparsers) -> None:
    """Add the ``compare`` command to the ``repvideo`` parser.

    Example:
        ```python
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="repvideo")
        >>> register(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["compare", "a cat", "--out", "cmp.mp4", "--steps", "2"])
        >>> args.prompt, args.out, args.steps, args.fps, args.func.__name__
        ('a cat', 'cmp.mp4', 2, 8.0, 'run')

        ```
    """
    parser = add_parser(
        subparsers, "compare",
        help="the same prompt and seed without and with RepVideo, side by side, plus the frame-similarity figure",
        description="Generate one prompt without and with RepVideo from the same seed and write the two videos side "
        "by side (left: without RepVideo, right: with) into --out, plus OUT_frame_similarity.png: the "
        "adjacent-frame feature similarity of every latent frame pair for both runs (the RepVideo paper's "
        "temporal-consistency view). Without --model it runs the embedded tiny CogVideoX pipeline (random weights, "
        "offline, seconds on a CPU).",
    )
    parser.add_argument("prompt", nargs="?", default=None,
                        help="text prompt (default: repvideo_diffusers.analysis.DEFAULT_PROMPT, a fox in the snow)")
    add_out_argument(parser, f"side-by-side mp4; the figure goes beside it as <name>_frame_similarity.png "
                     f"(default: {DEFAULT_OUT})", default=DEFAULT_OUT)
    add_pipeline_arguments(parser, gates_help="gates folder or Hub id for the RepVideo run (default: gates saved "
                           "with the model, else fresh gates)")
    parser.add_argument("--fps", type=positive(float), default=8.0, help="frames per second of the mp4 (default 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    device = check_pipeline_arguments(args)
    out = check_output_file(args.out, args.overwrite, suffixes=(".mp4",))

    from .. import install
    from ..analysis import DEFAULT_PROMPT
    from ..analysis.compare import compare_videos, similarity_figure_path, write_comparison
    from ..generation import prepare_pipeline, set_attention
    from ..utils.dtypes import default_dtype

    check_output_file(similarity_figure_path(out), args.overwrite, suffixes=(".png",))
    install()
    pipe, call = prepare_pipeline(args, default_dtype(args.dtype, device))
    pipe.to(device)
    set_attention(pipe, args.attention)
    result = compare_videos(pipe, args.prompt or DEFAULT_PROMPT, gates=args.gates, seed=args.seed, **call)
    video, figure = write_comparison(result, out, fps=args.fps)
    frames, height, width = result.base.shape[:3]
    print(f"wrote {video} ({frames} frames, {2 * width}x{height}: left without RepVideo, right with) and {figure}")
    print(f"adjacent-frame feature similarity (mean over latent frame pairs): without RepVideo "
          f"{sum(result.base_similarity) / len(result.base_similarity):.4f}, with RepVideo "
          f"{sum(result.repvideo_similarity) / len(result.repvideo_similarity):.4f}")
    return 0

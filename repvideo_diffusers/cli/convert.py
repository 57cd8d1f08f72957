"""``repvideo convert`` (SAT -> diffusers) and ``repvideo export-sat`` (diffusers -> SAT).

Argument parsing only; the work is `repvideo_diffusers.convert.convert_sat_checkpoint` / `export_sat`.
"""

from __future__ import annotations

import argparse

from pathlib import Path

from ._common import (UsageError, add_device_arguments, add_parser, check_input_file, check_model_source,
                      check_output_folder, positive)

# Kept equal to repvideo_diffusers.convert.DEFAULT_MAX_SHARD_SIZE (a test checks): importing that module here would
# import torch and slow down `repvideo --help`.
DEFAULT_MAX_SHARD_SIZE = "2GB"


def register(subparsers) -> None:
    parser = add_parser(
        subparsers, "convert",
        help="convert a SAT RepVideo checkpoint (e.g. Vchitect/RepVideo) to diffusers",
        description="Convert a SwissArmyTransformer RepVideo checkpoint (CogVideoX transformer + learned gates) into "
        "diffusers: OUT/transformer (safetensors) and OUT/repvideo (gates). With --base, OUT becomes a complete "
        "pipeline folder: CogVideoXPipeline.from_pretrained(OUT) then pipe.enable_repvideo().",
    )
    parser.add_argument("--sat", required=True, help="SAT checkpoint folder (latest + <it>/mp_rank_00_model_states.pt) or .pt file")
    parser.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --overwrite)")
    parser.add_argument("--base", default=None, help="CogVideoX pipeline folder or Hub id for the other components, e.g. THUDM/CogVideoX-2b (default: none, write only "
                        "transformer + gates)")
    add_device_arguments(parser, device=False, dtype_help="weights dtype (default: the checkpoint's)")
    parser.add_argument("--config", default=None, help="diffusers transformer config.json overriding the inferred config, e.g. the text length (default: none, the "
                        "config inferred from the shapes and --base)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    parser.add_argument("--allow-unsafe-pickle", action="store_true", help="load checkpoints that pickle Python objects (trusted files only)")
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE,
                        help=f"safetensors shard size: bytes, or a number with B, KB, MB, GB, TB, KiB, MiB, GiB "
                        f"(default {DEFAULT_MAX_SHARD_SIZE})")
    parser.set_defaults(func=_run_convert)

    export = add_parser(
        subparsers, "export-sat",
        help="write a diffusers CogVideoX transformer + RepVideo gates as a SAT checkpoint",
        description="Write a diffusers CogVideoX transformer and RepVideo gates in the SwissArmyTransformer layout "
        "that the official RepVideo code loads (OUT/latest, OUT/<iteration>/mp_rank_00_model_states.pt).",
    )
    export.add_argument("--model", required=True, help="CogVideoX pipeline folder or transformer folder")
    export.add_argument("--gates", default=None, help="gates folder or Hub id (default: MODEL/repvideo)")
    export.add_argument("--out", required=True, help="output folder (must not exist or be empty, unless --overwrite)")
    export.add_argument("--iteration", type=positive(int, allow_zero=True), default=1, help="iteration number written to 'latest' (default 1)")
    add_device_arguments(export, device=False, dtype_help="weights dtype (default: the model's)")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    export.set_defaults(func=_run_export)


def _check_sat_source(path: str) -> None:
    if not Path(path).exists():
        raise UsageError(f"--sat {path!r} does not exist. Pass a SAT checkpoint folder (with 'latest' and "
                         "'<iteration>/mp_rank_00_model_states.pt') or its .pt file.")


def _check_convert(args: argparse.Namespace) -> None:
    """Every argument of ``convert`` checked before the checkpoint is read."""
    _check_sat_source(args.sat)
    check_output_folder(args.out, args.overwrite)
    if args.base is not None:
        check_model_source(args.base, "--base", what="a CogVideoX pipeline folder")
    if args.config is not None:
        check_input_file(args.config, "--config", suffixes=(".json",))
    from ..convert.to_diffusers import parse_shard_size

    parse_shard_size(args.max_shard_size)


def _check_export(args: argparse.Namespace) -> None:
    """Every argument of ``export-sat`` checked before the transformer is read."""
    model = Path(args.model)
    if not model.is_dir():
        found = "is a file" if model.exists() else "does not exist"
        raise UsageError(f"--model {args.model!r} {found}; export-sat reads a local CogVideoX pipeline folder or its "
                         "transformer folder (download a Hub model first).")
    if not any((folder / "config.json").is_file() for folder in (model / "transformer", model)):
        raise UsageError(f"--model {args.model!r} has no config.json, neither in it nor in 'transformer/': it is not "
                         "a diffusers pipeline or transformer folder. Pass the folder that holds them.")
    if args.gates is not None:
        check_model_source(args.gates, "--gates", marker="config.json", what="a RepVideo gates folder")
    check_output_folder(args.out, args.overwrite)


def _run_convert(args: argparse.Namespace) -> int:
    _check_convert(args)
    from ..convert import convert_sat_checkpoint

    result = convert_sat_checkpoint(
        args.sat, args.out, base=args.base, dtype=args.dtype, config=args.config, overwrite=args.overwrite,
        allow_unsafe_pickle=args.allow_unsafe_pickle, max_shard_size=args.max_shard_size,
    )
    kind = "pipeline" if result.pipeline else "transformer + gates"
    gates = ", ".join(f"{g:.3f}" for g in result.gates[:6]) + (", ..." if len(result.gates) > 6 else "")
    print(f"wrote {result.out_dir} ({kind}; {result.variant}; {str(result.dtype).replace('torch.', '')}; "
          f"gates [{gates}]; {result.seconds:.1f}s)")
    return 0


def _run_export(args: argparse.Namespace) -> int:
    _check_export(args)
    from ..convert import SAT_MODEL_FILE, export_sat

    out = export_sat(args.model, args.gates, args.out, iteration=args.iteration, dtype=args.dtype, overwrite=args.overwrite)
    print(f"wrote {out} (SAT layout: latest + {args.iteration}/{SAT_MODEL_FILE})")
    return 0

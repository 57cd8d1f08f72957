"""The ``repvideo`` command line.

One module per command in this package, each with ``register(subparsers)``, which adds the command's parser and
sets ``func`` (called with the parsed ``argparse.Namespace``). The modules parse arguments and call the library;
the work itself lives in the library's capabilities.
"""

import argparse
import importlib
import sys

# name of the owning module; imported lazily so `repvideo --help` stays fast.
_COMMAND_MODULES = (
    "repvideo_diffusers.cli.generate",
    "repvideo_diffusers.cli.analyze",
    "repvideo_diffusers.cli.convert",
    "repvideo_diffusers.cli.train",
    "repvideo_diffusers.cli.vae",
    "repvideo_diffusers.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="repvideo", description="RepVideo and CV-VAE for Hugging Face diffusers video pipelines."
    )
    parser.add_argument("--version", action="version", version=f"repvideo-diffusers {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"repvideo {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

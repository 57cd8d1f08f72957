"""The ``repvideo`` command line.

One module per command in this package, each with ``register(subparsers)``, which adds the command's parser and
sets ``func`` (called with the parsed ``argparse.Namespace``). The modules parse and check arguments and call the
library; the work itself lives in the library's capabilities. What the commands share (flag vocabulary, error policy,
checks before any work) is in `repvideo_diffusers.cli._common`. Building the parser imports no model library, so
``repvideo --help`` is instant; each command imports what it needs when it runs.
"""

import argparse
import importlib
import sys

from ._common import ArgumentParser, HelpFormatter, debug_requested, run_command

# One module per command, imported to build the parser (each keeps its heavy imports inside its `run`).
_COMMAND_MODULES = (
    "repvideo_diffusers.cli.generate",
    "repvideo_diffusers.cli.analyze",
    "repvideo_diffusers.cli.compare",
    "repvideo_diffusers.cli.convert",
    "repvideo_diffusers.cli.train",
    "repvideo_diffusers.cli.vae",
    "repvideo_diffusers.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = ArgumentParser(
        prog="repvideo", formatter_class=HelpFormatter,
        description="RepVideo and CV-VAE for Hugging Face diffusers video pipelines.",
        epilog="Errors end in one line and exit code 2 (1 for a bug, 130 for Ctrl-C); --debug (anywhere on the "
        "command line) or REPVIDEO_DEBUG=1 prints tracebacks.",
    )
    parser.add_argument("--version", action="version", version=f"repvideo-diffusers {__version__}")
    parser.add_argument("--debug", action="store_true", help="print the traceback of any error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv=None) -> int:
    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a bad argument (already reported in one line)
        return exit_.code if isinstance(exit_.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = " ".join(["repvideo", *(name for name in (args.command, getattr(args, "vae_command", None)) if name)])
    return run_command(args.func, args, prog, debug=debug)


if __name__ == "__main__":
    sys.exit(main())

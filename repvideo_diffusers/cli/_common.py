"""What every ``repvideo`` command shares: one flag vocabulary, one error policy, checks that run before any work.

Nothing here imports torch or diffusers at module level: ``repvideo --help`` builds every command's parser, and must
answer in well under a second.

* **Vocabulary.** ``--out`` names every output; ``--overwrite`` allows replacing one; ``--device`` defaults to CUDA
  when a GPU is visible, else the CPU, in every command; ``--dtype`` is spelled ``fp32`` / ``fp16`` / ``bf16``
  (``float32``, ``float16``, ``half``, ``bfloat16`` are accepted too). Old flag names stay as hidden aliases for one
  release (`add_alias`) and say so once when used.
* **Errors** (`run_command`): a failure the user can cause (`UsageError`, any ``ValueError`` or ``OSError``) ends
  in one line ``repvideo <command>: error: ...`` and exit code 2; any other exception is a bug: one line and exit
  code 1 (the traceback with ``--debug`` or ``REPVIDEO_DEBUG=1``); Ctrl-C: one line and exit code 130.
* **Validate before working**: `resolve_device`, `check_dtype`, `check_output_file`, `check_output_folder`,
  `check_model_source` are called by each command before it loads a model.

Example:
    ```python
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="repvideo demo", formatter_class=HelpFormatter)
    >>> add_out_argument(parser, "output video (mp4)", default="out.mp4")
    >>> add_alias(parser, "--output", "--out")
    >>> parser.parse_args(["--output", "b.mp4"]).out
    'b.mp4'
    >>> canonical_dtype("float16"), canonical_dtype("bf16")
    ('fp16', 'bf16')

    ```
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

DTYPE_NAMES = ("fp32", "fp16", "bf16")
DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}
DEBUG_ENV = "REPVIDEO_DEBUG"
ISSUES_URL = "https://github.com/repvideo-diffusers/repvideo-diffusers/issues"


class UsageError(ValueError):
    """A problem with what the user asked for; the message says what was expected, what was found and the fix."""


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with ``(default: ...)`` added to every option whose help does not already give one."""

    def _get_help_string(self, action):  # noqa: D401 - argparse's extension point (a public subclassing hook)
        text = action.help or ""
        if action.help is argparse.SUPPRESS or "default" in text.lower() or action.required:
            return text
        if action.option_strings and action.nargs != 0:
            return f"{text} (default: {action.default})" if action.default is not None else text
        if isinstance(action, argparse._StoreTrueAction):  # noqa: SLF001 - argparse's public action class
            return f"{text} (default: off)"
        return text


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors follow the error policy: one line, exit code 2, with a pointer to --help.

    It also checks the required options that have an old name (`add_alias`), which argparse cannot.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        missing = [a.option_strings[0] for a in getattr(self, "_required_with_alias", ())
                   if getattr(namespace, a.dest, None) is None]
        if missing:
            self.error(f"the following arguments are required: {', '.join(missing)}")
        return namespace, extras

    def error(self, message):
        # "argument --steps: must be ..." reads better as "--steps must be ..." (the checks below word it so).
        if message.startswith("argument ") and ": must " in message:
            message = message[len("argument "):].replace(": must ", " must ", 1)
        self.exit(2, f"{self.prog}: error: {message.rstrip('.')}. See `{self.prog} --help`.\n")


def add_parser(subparsers, name: str, **kwargs) -> ArgumentParser:
    """``subparsers.add_parser`` with this module's parser class and help formatter."""
    return subparsers.add_parser(name, formatter_class=HelpFormatter, **kwargs)


class _DeprecatedAlias(argparse.Action):
    def __init__(self, option_strings, dest, new_flag, **kwargs):
        self.new_flag = new_flag
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: note: {option_string} is now {self.new_flag}; the old name goes in the next release.",
              file=sys.stderr)
        setattr(namespace, self.dest, values if self.nargs != 0 else True)


def add_alias(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept the old flag name ``old`` for ``new`` (hidden from --help; a one-line note when used)."""
    target = next(a for a in parser._actions if new in a.option_strings)  # noqa: SLF001 - argparse's action list
    if target.required:  # either name satisfies it: ArgumentParser.parse_known_args checks instead of argparse
        target.required = False
        parser._required_with_alias = [*getattr(parser, "_required_with_alias", ()), target]
    nargs = 0 if target.nargs == 0 else None
    parser.add_argument(old, dest=target.dest, action=_DeprecatedAlias, new_flag=new, nargs=nargs,
                        type=target.type if nargs is None else None, help=argparse.SUPPRESS)


def canonical_dtype(value: str) -> str:
    """``"float16"`` -> ``"fp16"``: the one spelling of a dtype name; an unknown name is a `UsageError`."""
    name = DTYPE_ALIASES.get(str(value).lower(), str(value).lower())
    if name not in DTYPE_NAMES:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(DTYPE_NAMES)} (or {', '.join(DTYPE_ALIASES)}), got {value!r}")
    return name


def add_out_argument(parser, help: str, default=None, required: bool = False) -> None:
    """``--out`` and ``--overwrite``, the same in every command."""
    parser.add_argument("--out", default=default, required=required, help=help)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def add_device_arguments(parser, dtype: bool = True, device: bool = True, dtype_help: str = "weights and compute "
                         "dtype (default: bf16 on CUDA, fp32 on CPU)") -> None:
    """``--device`` (default: CUDA when visible, else CPU) and ``--dtype`` (fp32 / fp16 / bf16)."""
    if device:
        parser.add_argument("--device", default=None,
                            help="cpu, cuda, cuda:1, ... (default: cuda when a GPU is visible, else cpu)")
    if dtype:
        parser.add_argument("--dtype", type=canonical_dtype, default=None, metavar="{fp32,fp16,bf16}", help=dtype_help)


def positive(kind=int, allow_zero: bool = False):
    """An argparse ``type`` for a finite number > 0 (or >= 0)."""
    def parse(text: str):
        noun = "integer" if kind is int else "number"
        wanted = f"must be a {'non-negative' if allow_zero else 'positive'} {noun}"
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{wanted}, got {text!r}") from None
        if value != value or value in (float("inf"), float("-inf")) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"{wanted}, got {text!r}")
        return value
    parse.__name__ = f"{'non-negative' if allow_zero else 'positive'} {kind.__name__}"
    return parse


def finite(text: str) -> float:
    """An argparse ``type`` for any finite float (``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


# ------------------------------------------------------------------------------------------------------------------
# Checks that run before any model is loaded
# ------------------------------------------------------------------------------------------------------------------

def resolve_device(device: str | None, option: str = "--device") -> str:
    """The device to run on: ``device`` checked against this machine, or CUDA when visible, else ``"cpu"``."""
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"{option} expects cpu, cuda, cuda:N or mps, got {device!r}.") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{option} {device} asks for a CUDA GPU, but this machine has none (torch sees no CUDA "
                             f"device). Pass {option} cpu, or leave {option} out to pick the GPU when there is one.")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise UsageError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"numbered from 0. Pass {option} cuda:0 (or another index below the count).")
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"{option} mps: the Apple MPS backend is not available here. Pass {option} cpu.")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"{option} expects cpu, cuda, cuda:N or mps, got {device!r}.")
    return str(parsed)


def check_dtype(dtype: str | None, device: str, option: str = "--dtype") -> None:
    """Refuse fp16 on the CPU, where PyTorch lacks half-precision kernels for much of a video model."""
    if dtype == "fp16" and device.startswith("cpu"):
        raise UsageError(f"{option} fp16 runs on GPUs only; the device here is {device}. Pass {option} fp32 or "
                         f"{option} bf16 on the CPU, or --device cuda on a GPU machine.")


def _check_parent_writable(path: Path, option: str) -> None:
    from ..utils.io import check_can_create  # light: os and tempfile only

    check_can_create(path.parent, option, named=path)


def check_output_file(out, overwrite: bool = False, suffixes: tuple[str, ...] = (), option: str = "--out") -> Path:
    """Refuse an output file path that exists (unless ``overwrite``), is a folder, has the wrong suffix, or cannot
    be written; missing parent folders are fine (they are made when the file is written)."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"{option} {str(out)!r} is a folder; a file path is expected here "
                         f"(for example {str(out / ('output' + (suffixes[0] if suffixes else '')))!r}).")
    if suffixes and out.suffix.lower() not in suffixes:
        raise UsageError(f"{option} expects a {' or '.join(suffixes)} file, got {str(out)!r}. "
                         f"Give a path ending in {suffixes[0]}.")
    if out.exists() and not overwrite:
        raise UsageError(f"{option} {str(out)!r} already exists. Choose another path, or pass --overwrite to replace it.")
    _check_parent_writable(out, option)
    return out


def check_output_folder(out, overwrite: bool = False, option: str = "--out", allow_existing: bool = False) -> Path:
    """Refuse an output folder path that is a file, or a non-empty folder (unless ``overwrite`` or
    ``allow_existing``), or cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {str(out)!r} is a file; a folder is expected here. Choose a folder path.")
    if out.is_dir() and any(out.iterdir()) and not (overwrite or allow_existing):
        raise UsageError(f"{option} {str(out)!r} already exists and is not empty. Choose a new folder, or pass "
                         "--overwrite to replace it.")
    _check_parent_writable(out / "x", option)
    return out


def check_input_file(path, option: str, suffixes: tuple[str, ...] = ()) -> Path:
    """Refuse a missing input file (or a folder where a file is expected)."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{option} {str(path)!r} does not exist. Check the path.")
    if path.is_dir():
        raise UsageError(f"{option} {str(path)!r} is a folder; a file is expected here.")
    if suffixes and path.suffix.lower() not in suffixes:
        raise UsageError(f"{option} expects a {' or '.join(suffixes)} file, got {str(path)!r}.")
    return path


def _is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def check_model_source(source: str | None, option: str = "--model", marker: str | None = "model_index.json",
                       what: str = "a diffusers pipeline folder") -> None:
    """Refuse a ``source`` that is neither a local folder with ``marker`` nor a usable Hub id.

    A Hub id must be well formed, and with ``HF_HUB_OFFLINE=1`` it must already be in the Hugging Face cache.
    """
    if source is None:
        return
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{option} {source!r} is a file; {what} (or a Hub id) is expected.")
        if marker and not (path / marker).is_file():
            raise UsageError(f"{option} {source!r} is a folder without {marker}, so it is not {what}. Pass the "
                             f"folder that holds {marker} (or a Hub id).")
        return
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep != "/" and os.sep in source:
        raise UsageError(f"{option} {source!r}: no such folder, and it is not a Hub id like THUDM/CogVideoX-2b. "
                         "Pass an existing local folder or a Hub id.")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        raise UsageError(f"{option} {source!r} is neither a local folder nor a valid Hub id (like "
                         "THUDM/CogVideoX-2b). Check the spelling.") from None
    if _is_offline():
        from huggingface_hub import scan_cache_dir

        try:
            cached = {repo.repo_id for repo in scan_cache_dir().repos}
        except Exception:  # noqa: BLE001 - no cache folder at all is the same as an empty cache
            cached = set()
        if source not in cached:
            raise UsageError(f"{option} {source!r} is not a local folder and is not in the Hugging Face cache, and "
                             "HF_HUB_OFFLINE=1 forbids downloading it. Pass a local folder, or download it first "
                             "(unset HF_HUB_OFFLINE on a connected machine).")


# ------------------------------------------------------------------------------------------------------------------
# The error policy
# ------------------------------------------------------------------------------------------------------------------

def _one_line(error: BaseException) -> str:
    text = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text or type(error).__name__


def debug_requested(argv: list[str]) -> tuple[bool, list[str]]:
    """Whether ``--debug`` (anywhere on the command line) or ``REPVIDEO_DEBUG=1`` asks for tracebacks; argv without it."""
    env = os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    return env or "--debug" in argv, [arg for arg in argv if arg != "--debug"]


def run_command(func, args: argparse.Namespace, prog: str, debug: bool = False) -> int:
    """Call ``func(args)`` under the error policy; returns the exit code."""
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted (Ctrl-C); outputs that were not complete were removed.", file=sys.stderr)
        return 130
    except (ValueError, OSError) as error:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:  # noqa: BLE001 - anything else is a bug in repvideo-diffusers or a library below it
        if debug:
            traceback.print_exc()
            print(f"{prog}: internal error (traceback above): {type(error).__name__}: {_one_line(error)}",
                  file=sys.stderr)
        else:
            print(f"{prog}: internal error: {type(error).__name__}: {_one_line(error)}. This is a bug: rerun with "
                  f"--debug (or {DEBUG_ENV}=1) for the traceback and report it at {ISSUES_URL}.", file=sys.stderr)
        return 1

"""The output folder of a training run, checked before any model is loaded, and never lost to a new run.

Shared by ``repvideo train`` and ``repvideo vae train``:

* ``--out`` that is a file, or a folder that cannot be written, is refused before anything is loaded.
* ``--out`` that already holds a run is refused unless ``--resume`` (continue it) or ``--overwrite`` (start anew):
  checkpoints of two runs never mix.
* ``--overwrite`` keeps the earlier run until the new one has something to show: `OutputFolder.begin` (called just
  before the first step, after every check and load) moves the old folder aside to a hidden sibling, and
  `OutputFolder.landed` deletes it once the new run's first checkpoint (or its final result) is complete. A run that
  fails or is interrupted before then is removed and the old folder put back. Why not clear it at the start: a
  mistyped ``--overwrite``, or a run that dies at step 1, would otherwise destroy the only copy of the earlier run.
* A run that fails before its first output leaves no folder behind (nor the ``logs/`` of a tracker).

Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> out = Path(tempfile.mkdtemp()) / "run"
    >>> _ = (out / "checkpoints").mkdir(parents=True)
    >>> check_output_dir(out, resume=None, overwrite=False)
    Traceback (most recent call last):
    ...
    ValueError: --out ... already holds a run (checkpoints). Pass --resume latest to continue it, --overwrite ...
    >>> folder = OutputFolder(out, replace=True)
    >>> with folder:
    ...     folder.begin()  # the old run is set aside
    ...     _ = (out / "new.txt").write_text("first checkpoint")
    ...     folder.landed()  # the new run has output: the old one goes
    >>> sorted(p.name for p in out.iterdir())
    ['new.txt']

    ```
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..utils.io import check_can_create


def check_output_dir(out, *, resume, overwrite: bool, option: str = "--out") -> Path:
    """Refuse an output folder that is a file, cannot be written, or holds a run (unless ``resume``/``overwrite``)."""
    out = Path(out)
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite starts a new one there; pass one of "
                         "them, not both.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {str(out)!r} is a file; a folder is expected here (it is created). Choose a "
                         "folder path.")
    if out.is_dir() and not (resume or overwrite):
        entries = sorted(p.name for p in out.iterdir())
        if entries:
            raise ValueError(f"{option} {str(out)!r} already holds a run ({', '.join(entries[:4])}). Pass --resume "
                             "latest to continue it, --overwrite to start a new run in its place, or choose a new "
                             "folder.")
    check_can_create(out, option)
    return out


def check_weights(folder, option: str) -> None:
    """Refuse a local folder with a truncated or corrupt ``.safetensors`` file, naming the file (reads headers only).

    A Hub id (no such local folder) is left to the loader.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return
    from safetensors import safe_open

    for path in sorted(folder.rglob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError (not an OSError)
            raise ValueError(f"{option} {str(folder)!r}: the weights file {str(path)!r} is truncated or corrupt "
                             f"({error}). Download or save it again.") from None


def corrupt_precompute_entry(path, folder, error) -> ValueError:
    """The error for an unreadable entry of ``--precompute-dir``: names the file and how to recover."""
    return ValueError(f"--precompute-dir entry {str(path)!r} is truncated or corrupt ({error}), probably from an "
                      f"interrupted older version. Delete that file (or the whole folder {str(folder)!r}); it is "
                      "encoded again on the next run.")


def check_precompute_dir(folder) -> None:
    """Refuse a ``--precompute-dir`` that is a file or holds an unreadable entry (headers only, no tensor read)."""
    if folder is None:
        return
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--precompute-dir {str(folder)!r} is a file; a folder is expected here. Choose a folder "
                         "path (it is created).")
    if not folder.is_dir():
        return
    from safetensors import safe_open

    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError
            raise corrupt_precompute_entry(path, folder, error) from None


def check_mixed_precision(mixed_precision: str) -> None:
    """Refuse fp16 mixed precision when training would run on the CPU (no CUDA, or ``ACCELERATE_USE_CPU``)."""
    if mixed_precision != "fp16":
        return
    import torch

    forced_cpu = os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "true", "yes")
    if forced_cpu or not torch.cuda.is_available():
        raise ValueError("--mixed-precision fp16 needs a CUDA GPU, and this run would train on the CPU. Pass "
                         "--mixed-precision bf16 (or no) on the CPU, or run on a GPU machine.")


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


class OutputFolder:
    """Rolls back a run's output folder if the run ends before its first output lands (see the module doc).

    Use as a context manager around the whole run; call `begin` just before the first step and `landed` after the
    first complete checkpoint or result. Only the main process (``RANK`` 0) moves or deletes folders.
    """

    def __init__(self, out, replace: bool = False):
        self.out = Path(out)
        self.created = not self.out.exists()
        self.existed = self.out.is_dir() and any(self.out.iterdir())
        self.replace = replace and self.existed
        self.aside: Path | None = None
        self.has_output = False

    def begin(self) -> None:
        """Set an earlier run aside (``replace`` only); the folder then starts empty."""
        if self.replace and self.aside is None and _is_main_process():
            self.aside = self.out.with_name(f".{self.out.name}.replaced-{os.getpid()}")
            shutil.rmtree(self.aside, ignore_errors=True)
            os.replace(self.out, self.aside)
            self.out.mkdir()

    def landed(self) -> None:
        """The run has a complete output: the earlier run, if set aside, is deleted now."""
        self.has_output = True
        if self.aside is not None:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.aside = None

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None or self.has_output or not _is_main_process():
            return
        if self.aside is not None:  # put the earlier run back
            shutil.rmtree(self.out, ignore_errors=True)
            os.replace(self.aside, self.out)
            self.aside = None
        elif self.created:
            shutil.rmtree(self.out, ignore_errors=True)
        elif not self.existed and self.out.is_dir():  # an empty folder the user made: empty again
            for entry in self.out.iterdir():
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink()


def check_train_inputs(config) -> None:
    """Every path and setting of a `TrainConfig` that can be checked without loading a model (``repvideo train``)."""
    from .data import read_rows

    check_output_dir(config.output_dir, resume=config.resume, overwrite=config.overwrite)
    check_mixed_precision(config.mixed_precision)
    read_rows(config.data)  # --data exists and its metadata parses
    check_precompute_dir(config.precompute_dir)
    for source, option in ((config.model, "--model"), (config.gates, "--gates")):
        if source is not None:
            check_weights(source, option)
    from diffusers.optimization import SchedulerType

    names = [kind.value for kind in SchedulerType]
    if config.lr_scheduler not in names:
        raise ValueError(f"--lr-scheduler must be one of {', '.join(names)}, got {config.lr_scheduler!r}.")

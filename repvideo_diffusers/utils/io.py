"""Atomic writes: everything is written beside its destination first and moved into place only when complete.

A failure (an exception, Ctrl-C) never leaves a half-written file or folder under the final name, and a folder
being replaced is removed only after its replacement is in place. What lands gets the usual modes under the umask
(``tempfile`` makes its staging files 0600 and folders 0700, which is right only while they are private).

Example:
    ```python
    >>> import tempfile
    >>> from pathlib import Path
    >>> from repvideo_diffusers.utils.io import staged_file, staged_folder
    >>> out = Path(tempfile.mkdtemp()) / "result"
    >>> with staged_folder(out) as staging:
    ...     _ = (staging / "a.txt").write_text("done")
    >>> sorted(p.name for p in out.iterdir())
    ['a.txt']
    >>> with staged_file(out / "b.txt") as staging:
    ...     _ = Path(staging).write_text("also done")
    >>> (out / "b.txt").read_text()
    'also done'

    ```
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def check_new_folder(out: str | os.PathLike, overwrite: bool = False, option: str = "--out") -> Path:
    """Refuse an existing non-empty folder (or any existing file) at ``out`` unless ``overwrite``; returns the path."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(
            f"{option} {str(out)!r} already exists and is not empty. Choose a new folder, or pass "
            "--overwrite (Python: overwrite=True) to replace it."
        )
    return out


def check_can_create(path: str | os.PathLike, option: str = "--out", named: str | os.PathLike | None = None) -> Path:
    """Refuse a folder ``path`` that could not be made: its nearest existing ancestor is a file, or not writable.
    ``named``: the path the message names (default ``path``), e.g. the file to be written in that folder."""
    path = Path(path)
    ancestor = path.absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{option} {str(named or path)!r}: {str(ancestor)!r} is a file, so no folder can be made "
                         "there. Choose a path under a folder.")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {str(named or path)!r}: the folder {str(ancestor)!r} is not writable. Choose a "
                         "path you can write to.")
    return path


def _umask() -> int:
    # os.umask both sets and returns the mask: set a harmless value, read the old one, restore it at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def publish_mode(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a plain ``open`` / ``mkdir`` would have given it under the umask (0644 / 0755 usually)."""
    path = Path(path)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


def move_into_place(staging: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move a completely written file or folder to ``final``, replacing what is there.

    An existing folder is renamed aside first and removed only once the new one is in place.
    """
    staging, final = Path(staging), Path(final)
    old = None
    # A folder cannot replace a file in one rename (nor a file a folder): set the old one aside first.
    if final.exists() and (final.is_dir() or staging.is_dir()) and not final.is_symlink():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike, overwrite: bool = True, merge: bool = False,
                  option: str = "--out") -> Iterator[Path]:
    """Yield a hidden staging folder beside ``out``; on success it becomes ``out``.

    Args:
        overwrite: replace a non-empty ``out``; when ``False`` such an ``out`` is refused before anything is written.
        merge: move each staged entry into ``out`` instead of replacing the folder (other files in ``out`` stay).
    """
    out = Path(out)
    if not overwrite:
        check_new_folder(out, overwrite, option)
    if merge and out.exists() and not out.is_dir():
        raise ValueError(f"{option} {str(out)!r} is a file; a folder is needed here. Pass a folder path.")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        publish_mode(staging)
        if merge:
            out.mkdir(exist_ok=True)
            for entry in sorted(staging.iterdir()):
                move_into_place(entry, out / entry.name)
        else:
            move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def staged_file(out: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``out``; on success it replaces ``out`` in one rename.

    ``suffix``: the staging file's extension (default: ``out``'s), for writers that pick the format by it.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix if suffix is None else suffix
    handle, staging = tempfile.mkstemp(prefix=f".{out.stem}-", suffix=suffix, dir=out.parent)
    os.close(handle)
    try:
        yield staging
        publish_mode(staging)
        os.replace(staging, out)
    finally:
        if os.path.exists(staging):
            os.remove(staging)

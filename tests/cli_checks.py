"""Shared checks of the command line's error policy, for the bad-input tables (tests/test_cli_errors*.py).

`assert_refused` runs ``repvideo <argv>`` in-process and checks the whole policy: the exit code, exactly one line on
stderr of the form ``repvideo <command>: error: ...`` holding every expected fragment, and nothing changed on disk
under the watched folders (no file added, removed or rewritten, no mode changed).
"""

from __future__ import annotations

import os
from pathlib import Path

from repvideo_diffusers.cli import main


def snapshot(*folders) -> dict:
    """Every path under ``folders`` with its size, mtime and mode (a missing folder is recorded as missing)."""
    state = {}
    for folder in map(Path, folders):
        if not folder.exists():
            state[str(folder)] = "missing"
            continue
        for root, dirs, files in os.walk(folder):
            for name in [*dirs, *files]:
                path = Path(root) / name
                info = path.lstat()
                state[str(path)] = (info.st_size if path.is_file() else "dir", info.st_mtime_ns, info.st_mode)
    return state


def assert_refused(argv, fragments, capsys, watch=(), code: int = 2, command: str | None = None) -> str:
    """Run ``repvideo argv``; assert it exits with ``code``, prints one error line naming every fragment, and leaves
    the ``watch`` folders exactly as they were. Returns the error line."""
    capsys.readouterr()  # drop what earlier steps printed
    before = snapshot(*watch)
    assert main(list(map(str, argv))) == code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    command = command or " ".join(str(a) for a in argv[:2 if argv[0] == "vae" else 1])
    error_lines = [line for line in lines if line.startswith(f"repvideo {command}: ")]
    assert len(error_lines) == 1, f"expected one error line for `repvideo {command}`, got:\n{err}"
    line = error_lines[0]
    assert line.startswith(f"repvideo {command}: error: " if code == 2 else f"repvideo {command}: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert snapshot(*watch) == before, "the command changed files on disk before failing"
    return line

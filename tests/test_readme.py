"""The README's examples are correct: every ```python block runs as written, in order, on the embedded tiny model
(a reader's session: later blocks use the `pipe` of earlier ones), except the few marked
``<!-- not-run: reason -->`` because they need a GPU or a Hub download; a block marked ``<!-- needs: module -->``
runs when that optional package is installed (CI installs them in a second step, `.ci/optional-extras`), and the
test of that package reports a skip otherwise; every ``repvideo ...`` command line in a
```bash block parses with today's flags (no unknown option, no deprecated alias)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repvideo_diffusers.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAX_NOT_RUN = 5
BLOCK = re.compile(r"(?:<!--\s*not-run:\s*(?P<reason>[^>]*?)\s*-->\n)?(?:<!--\s*needs:\s*(?P<needs>[\w.]+)\s*-->\n)?"
                   r"```python\n(?P<code>.*?)```", re.S)


def python_blocks() -> list[tuple[int, str, str | None]]:
    """(line number, code, not-run reason or None) of every ```python block."""
    return [(README[:m.start("code")].count("\n"), m.group("code"), m.group("reason")) for m in BLOCK.finditer(README)]


def optional_packages() -> dict[int, str]:
    """Line number -> the optional package a ``<!-- needs: module -->`` block imports."""
    return {README[:m.start("code")].count("\n"): m.group("needs") for m in BLOCK.finditer(README) if m.group("needs")}


def command_lines() -> list[str]:
    """Every ``repvideo ...`` line of the ```bash blocks (continuations joined, comments dropped, ``...`` skipped)."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("repvideo ") and "..." not in line:
                lines.append(line)
    return lines


def test_only_a_few_blocks_are_marked_not_run_and_each_says_why():
    blocks = python_blocks()
    marked = [reason for _, _, reason in blocks if reason is not None]
    assert len(blocks) >= 10 and len(marked) <= MAX_NOT_RUN, marked
    assert all(len(reason) > 15 for reason in marked), marked
    # The marker belongs to the block right after it, never stranded before prose.
    assert README.count("<!-- not-run:") == len(marked)


def _clips(folder: Path) -> None:
    """The README's clips/ folder: two short videos with a metadata.jsonl (the Data section's layout)."""
    from repvideo_diffusers.utils.video import write_video

    folder.mkdir()
    rows = []
    for index, name in enumerate(("beach.mp4", "city.mp4")):
        frames = np.random.default_rng(index).integers(0, 255, (9, 64, 96, 3), dtype=np.uint8)
        write_video(frames, folder / name, fps=8)
        rows.append(json.dumps({"file_name": name, "text": f"clip number {index}"}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_every_unmarked_python_block_runs_in_order_on_the_tiny_model(tmp_path):
    blocks = [(line, code) for line, code, reason in python_blocks() if reason is None]
    _clips(tmp_path / "clips")
    (tmp_path / "benchmarks").symlink_to(ROOT / "benchmarks")  # "from the root of the clone"
    script = ["import sys, traceback", "session = {'__name__': '__main__'}"]
    needs = optional_packages()
    for line, code in blocks:
        run = f"exec(compile({code!r}, 'README.md:{line}', 'exec'), session)"
        if line in needs:  # an optional package: run the block where it is installed (see the test below)
            run = f"if __import__('importlib.util').util.find_spec({needs[line]!r}) is not None: {run}"
        script += [f"print('README block at line {line}', flush=True)", run]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=900)
    started = re.findall(r"README block at line (\d+)", result.stdout)
    assert result.returncode == 0, (f"the README block at line {started[-1] if started else '?'} failed:\n"
                                    f"{result.stderr[-3000:]}")
    assert len(started) == len(blocks)
    assert (tmp_path / "my-gates" / "config.json").is_file() and (tmp_path / "ckpt" / "my-repvideo" / "latest").is_file()


@pytest.mark.parametrize("module", sorted(set(optional_packages().values())))
def test_the_blocks_that_need_an_optional_package_ran(module):
    """Reports a skip where the package is missing, so that its README blocks are never left out silently."""
    pytest.importorskip(module, reason=f"README blocks marked `needs: {module}` run only with {module} installed "
                        "(CI: .ci/optional-extras)")
    assert module in optional_packages().values()


@pytest.mark.parametrize("line", command_lines())
def test_every_command_line_parses_with_current_flags(line):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            build_parser().parse_args(shlex.split(line)[1:])
        except SystemExit:
            pass
    assert err.getvalue() == "", f"{line}\n{err.getvalue()}"

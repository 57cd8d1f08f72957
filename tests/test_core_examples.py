"""The quickstart notebook runs end to end, and every docstring example in the core modules runs as written."""

import doctest
import importlib
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_notebook_runs_end_to_end(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "HF_HUB_OFFLINE": "1"})
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs)
    assert "loaded gates: [0.0, 0.0, 0.6" in text


@pytest.mark.parametrize(
    "module", ["repvideo", "gates", "pipeline", "tiny", "testing", "video"],
)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(f"repvideo_diffusers.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    assert result.attempted > 0

"""The package's shape: every module imports on its own, no module reaches into another library's private names
outside `_compat`, modules stay readable, and every docstring example runs as written."""

import ast
import doctest
import importlib
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import repvideo_diffusers

PACKAGE = Path(repvideo_diffusers.__file__).parent
MODULES = sorted(
    info.name for info in pkgutil.walk_packages([str(PACKAGE)], prefix="repvideo_diffusers.")
    if not info.name.endswith("__main__")
)
DEPRECATED = {"repvideo_diffusers.repvideo", "repvideo_diffusers.gates", "repvideo_diffusers.generate",
              "repvideo_diffusers.video"}
# Modules allowed over 400 lines: none today (each such module must say why at its top).
LONG_MODULE_LIMIT = 400


def test_the_tree_has_one_home_per_concern():
    subpackages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {"core", "families", "attention", "convert", "analysis", "training", "cvvae", "cli", "utils"} <= subpackages


@pytest.mark.slow
def test_every_module_imports_alone_in_a_fresh_interpreter():
    # One interpreter per module would take minutes; each module is imported first in its own child process, in
    # groups, by clearing every repvideo_diffusers module from sys.modules between imports. An import cycle shows
    # as an ImportError ("partially initialized module").
    script = textwrap.dedent("""
        import importlib, sys, warnings
        warnings.simplefilter("ignore", FutureWarning)
        failures = []
        for name in sys.argv[1:]:
            for loaded in [m for m in sys.modules if m == "repvideo_diffusers" or m.startswith("repvideo_diffusers.")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except Exception as error:
                failures.append(f"{name}: {type(error).__name__}: {error}")
        print("\\n".join(failures))
        sys.exit(1 if failures else 0)
    """)
    result = subprocess.run([sys.executable, "-c", script, *MODULES], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


def _private_accesses(path: Path) -> list[str]:
    """``from x._y import`` / ``import x._y`` of torch, diffusers, accelerate, transformers and attribute reads of
    the private names the package once used."""
    tree = ast.parse(path.read_text())
    found = []
    libraries = ("torch", "diffusers", "accelerate", "transformers", "huggingface_hub", "peft")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in libraries:
            if any(part.startswith("_") for part in node.module.split(".")):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found += [f"line {node.lineno}: import {alias.name}" for alias in node.names if alias.name.startswith("_")]
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in libraries and any(p.startswith("_") for p in alias.name.split(".")):
                    found.append(f"line {node.lineno}: import {alias.name}")
        if isinstance(node, ast.Attribute) and node.attr in {
            "_diffusers_hook", "_gradient_checkpointing_func", "_is_view", "_progress_bar_config", "_name_or_path",
            "_pack_latents", "_normalize_latents", "_prepare_rotary_positional_embeddings", "_reset_state",
            "_shared_state", "_attention_backend", "_modules",
        }:
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_private_names_of_other_libraries_are_touched_only_in_compat():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_compat.py" and path.parent == PACKAGE:
            continue
        found = _private_accesses(path)
        if found:
            offenders[str(path.relative_to(PACKAGE))] = found
    assert offenders == {}


def test_compat_names_why_and_which_versions_for_every_function():
    tree = ast.parse((PACKAGE / "_compat.py").read_text())
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and not node.name.startswith("_")]
    assert len(functions) >= 10
    for function in functions:
        doc = ast.get_docstring(function) or ""
        preceding = (PACKAGE / "_compat.py").read_text().splitlines()[max(0, function.lineno - 6): function.lineno]
        assert "erified" in doc + "\n".join(preceding) or function.name in {
            "diffusers_version_problem", "warn_if_unsupported_diffusers", "set_checkpointing_func",
            "restore_progress_bar_config",
        }, function.name


def test_no_module_is_over_400_lines_without_a_reason_at_its_top():
    long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        if len(lines) > LONG_MODULE_LIMIT and "over 400 lines" not in "\n".join(lines[:30]):
            long[str(path.relative_to(PACKAGE))] = len(lines)
    assert long == {}


def test_shared_code_names_no_family():
    # Family names may appear only in families/, in the family-specific converter (CogVideoX's SAT layout) and in
    # prose; code in core/, attention/ and training/ reads the registry.
    pattern = re.compile(r"['\"](CogVideoX|Wan|HunyuanVideo|LTX-Video|Mochi)['\"]")
    offenders = []
    for folder in ("core", "attention", "training"):
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = line.split("#")[0]
                if pattern.search(code) and ">>>" not in line:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert offenders == []


def _run_doctests(module) -> doctest.TestResults:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder().find(module):
        for example in test.examples:  # the closing ``` of a markdown code fence is not expected output
            example.want = re.sub(r"^\s*```\s*$\n?", "", example.want, flags=re.M)
        runner.run(test)
    return runner.summarize(verbose=False)


@pytest.mark.slow
@pytest.mark.parametrize("name", [m for m in MODULES if m not in DEPRECATED])
def test_docstring_examples_run_as_written(name, tiny_pipeline_dir):
    result = _run_doctests(importlib.import_module(name))
    assert result.failed == 0


def test_every_public_entry_point_has_a_docstring_example():
    missing = []
    for name in ("repvideo_diffusers.core.hooks", "repvideo_diffusers.core.gates", "repvideo_diffusers.core.pipeline",
                 "repvideo_diffusers.families", "repvideo_diffusers.attention", "repvideo_diffusers.utils.io"):
        module = importlib.import_module(name)
        if ">>>" not in (module.__doc__ or "") and not any(
            ">>>" in (getattr(obj, "__doc__", "") or "") for obj in vars(module).values()
            if getattr(obj, "__module__", None) == name
        ):
            missing.append(name)
    assert missing == []


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)


def test_importing_the_cvvae_alone_patches_nothing_and_the_package_installs_its_pipeline_methods():
    result = _fresh_python("""
        import repvideo_diffusers.cvvae
        from diffusers import DiffusionPipeline
        assert not hasattr(DiffusionPipeline, "enable_repvideo")
        assert not hasattr(DiffusionPipeline.save_pretrained, "__wrapped_by_repvideo__")
        import repvideo_diffusers
        repvideo_diffusers.install()  # needed by hand only after the CV-VAE came first
        assert callable(DiffusionPipeline.enable_repvideo)
    """)
    assert result.returncode == 0, result.stderr[-3000:]
    result = _fresh_python("""
        import repvideo_diffusers
        from diffusers import DiffusionPipeline, WanPipeline
        assert callable(WanPipeline.enable_repvideo) and callable(DiffusionPipeline.disable_repvideo)
    """)
    assert result.returncode == 0, result.stderr[-3000:]


def test_pipeline_methods_install_idempotently_and_uninstall_to_plain_diffusers():
    from diffusers import DiffusionPipeline

    from repvideo_diffusers.core import pipeline

    assert pipeline.is_installed()
    wrapped = DiffusionPipeline.save_pretrained
    pipeline.install()
    assert DiffusionPipeline.save_pretrained is wrapped  # not wrapped twice
    original = wrapped.__wrapped_by_repvideo__
    try:
        pipeline.uninstall()
        assert DiffusionPipeline.save_pretrained is original
        assert not hasattr(DiffusionPipeline, "enable_repvideo") and not hasattr(DiffusionPipeline, "disable_repvideo")
        pipeline.uninstall()  # nothing left to undo
    finally:
        pipeline.install()
    assert DiffusionPipeline.enable_repvideo is pipeline.enable_repvideo


@pytest.mark.parametrize("module, names", [
    ("repvideo_diffusers.repvideo", ["RepVideoConfig", "apply_repvideo", "remove_repvideo", "SUPPORTED_MODELS",
                                     "get_transformer_blocks"]),
    ("repvideo_diffusers.gates", ["RepVideoGates", "load_gates", "GATES_SUBFOLDER"]),
    ("repvideo_diffusers.generate", ["load_pipeline", "prepare_pipeline", "add_pipeline_arguments"]),
    ("repvideo_diffusers.video", ["read_video", "write_video"]),
])
def test_deprecated_module_paths_still_import_with_a_future_warning(module, names):
    result = subprocess.run(
        [sys.executable, "-c", f"import warnings; warnings.simplefilter('always')\n"
                               f"with warnings.catch_warnings(record=True) as caught:\n"
                               f"    from {module} import {', '.join(names)}\n"
                               f"assert any(w.category is FutureWarning and 'deprecated' in str(w.message) "
                               f"for w in caught), [str(w.message) for w in caught]"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_old_module_paths_that_became_packages_keep_their_public_names():
    from repvideo_diffusers import analysis, attention, convert

    for module, names in ((analysis, ("analyze", "save_report", "attention_similarity", "plot_gates")),
                          (attention, ("capture_attention", "probe_xformers", "attention_rows")),
                          (convert, ("convert_sat_checkpoint", "export_sat", "load_sat_state_dict"))):
        assert all(callable(getattr(module, name)) for name in names), module.__name__


def test_supported_models_is_a_live_view_of_the_registry():
    from repvideo_diffusers import SUPPORTED_MODELS
    from repvideo_diffusers.families import registered_families

    assert SUPPORTED_MODELS["WanTransformer3DModel"].family == "Wan"
    assert SUPPORTED_MODELS["HunyuanVideoTransformer3DModel"].block_lists == (
        "transformer_blocks", "single_transformer_blocks")
    assert len(SUPPORTED_MODELS) == sum(len(f.transformers) for f in registered_families().values())


@pytest.mark.parametrize("version, supported", [
    ("0.39.2", False), ("0.40.0", True), ("0.41.0", True), ("0.42.1", True), ("0.42.2.dev0", True),
    ("0.43.0", False), ("1.0.0", False),
])
def test_the_supported_diffusers_range_is_declared_and_checked(version, supported):
    from repvideo_diffusers._compat import diffusers_version_problem

    problem = diffusers_version_problem(version)
    assert (problem is None) == supported
    if not supported:
        assert f"diffusers {version} is installed" in problem and "diffusers>=0.40.0,<0.43.0" in problem


def test_an_untested_diffusers_version_warns_at_import_naming_the_range():
    result = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import warnings, diffusers
        diffusers.__version__ = "0.39.0"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import repvideo_diffusers
        messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        assert any("supports diffusers >= 0.40.0, < 0.43.0" in m and "0.39.0 is installed" in m for m in messages), messages
    """)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    from repvideo_diffusers._compat import SUPPORTED_DIFFUSERS

    setup = (PACKAGE.parent / "setup.cfg").read_text()
    assert f"diffusers>={SUPPORTED_DIFFUSERS[0][:4]},<{SUPPORTED_DIFFUSERS[1][:4]}" in setup

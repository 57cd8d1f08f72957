"""The error policy of the commands that run models (generate, analyze, bench, convert, export-sat), one row per bad
input: each must end in exit code 2 and one line naming what was expected, what was found and the fix, before any
model work, with nothing on disk changed (`assert_refused`). Then Ctrl-C (exit 130, no partial output), a corrupt tiny
cache, internal errors (exit 1, traceback only on request), and the help texts.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from cli_checks import assert_refused, snapshot
from repvideo_diffusers.cli import build_parser, main

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
UNCACHED = "someone-else/not-in-the-cache"
MY_COMMANDS = ("generate", "analyze", "bench", "convert", "export-sat")


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_pipeline_dir):
    """Model folders the rows read (never written): a tiny transformer, a pipeline with a truncated weights file,
    a Wan and a CV-VAE config folder."""
    from repvideo_diffusers.tiny import build_tiny_transformer

    root = tmp_path_factory.mktemp("models")
    build_tiny_transformer().save_pretrained(root / "transformer")
    shutil.copytree(tiny_pipeline_dir, root / "badpipe")
    weights = root / "badpipe" / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # a download cut short
    for name, config in (("wan", {"_class_name": "WanTransformer3DModel", "num_layers": 2}),
                         ("cvvae", {"_class_name": "CVVAEModel", "latent_channels": 4})):
        (root / name).mkdir()
        (root / name / "config.json").write_text(json.dumps(config))
    return root


@pytest.fixture
def place(tmp_path, monkeypatch):
    """A working folder with the files the rows name; the current folder too (default outputs land here)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.mp4").write_text("keep me")
    (tmp_path / "notes.txt").write_text("not a model, not a folder")
    (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
    (tmp_path / "empty.txt").write_text("\n  \n")
    for folder, name in (("busy", "old.mp4"), ("nomodel", "readme.txt"), ("nogates", "weights.bin"),
                         ("analysis", "analysis.json"), ("bench", "bench-tiny.json")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).write_text("keep me")
    return tmp_path


G = ["generate", "a cat", "--out", "{tmp}/v.mp4"]
A = ["analyze", "--out", "{tmp}/an"]
B = ["bench", "--size", "tiny", "--device", "cpu"]
C = ["convert", "--sat", "{tmp}/notes.txt", "--out", "{tmp}/conv"]
E = ["export-sat", "--model", "{models}/transformer", "--out", "{tmp}/sat"]

ROWS = [
    # generate: numbers
    (G + ["--fps", "0"], ["--fps must be a positive number", "'0'"]),
    (G + ["--fps", "-5"], ["--fps must be a positive number", "'-5'"]),
    (G + ["--guidance-scale", "nan"], ["--guidance-scale must be a non-negative number", "'nan'"]),
    (G + ["--steps", "0"], ["--steps must be a positive integer"]),
    (G + ["--seed", "-1"], ["--seed must be a non-negative integer"]),
    (G + ["--width", "abc"], ["--width must be a positive integer", "'abc'"]),
    (G + ["--frames", "10"], ["--frames must be 1 + 4k for this model, got 10", "Use --frames 9 or --frames 17",
                              "1 + 8k"]),
    (G + ["--height", "50"], ["--height must be a multiple of 16"]),
    # generate: models, gates, kernels, devices, dtypes
    (G + ["--no-repvideo", "--gates", "x"], ["contradict"]),
    (G + ["--model", "/no/such/folder"], ["no such folder", "Hub id"]),
    (G + ["--model", "{tmp}/nomodel"], ["without model_index.json", "Pass the folder that holds model_index.json"]),
    (G + ["--model", UNCACHED], ["not in the Hugging Face cache", "HF_HUB_OFFLINE=1"]),
    (G + ["--model", "not a hub id!"], ["neither a local folder nor a valid Hub id"]),
    (G + ["--model", "{models}/badpipe"], ["diffusion_pytorch_model.safetensors", "truncated or corrupt",
                                           "download it again"]),
    (G + ["--gates", "{tmp}/nogates"], ["--gates", "without config.json", "not a RepVideo gates folder"]),
    (G + ["--attention", "flash"], ["--attention", "invalid choice: 'flash'"]),
    (G + ["--dtype", "nonsense"], ["--dtype must be one of fp32, fp16, bf16", "'nonsense'"]),
    (G + ["--dtype", "fp16", "--device", "cpu"], ["fp16 runs on GPUs only", "--dtype fp32"]),
    (G + ["--device", "nonsense"], ["--device expects cpu, cuda, cuda:N or mps", "'nonsense'"]),
    pytest.param(G + ["--device", "cuda"], ["asks for a CUDA GPU", "Pass --device cpu"], marks=NO_CUDA),
    (G + ["--device", "cuda:7"], ["--device cuda:7"]),
    # generate: prompts and outputs
    (["generate", "--out", "{tmp}/v.mp4"], ["No prompt", "--prompts FILE"]),
    (["generate", "   ", "--out", "{tmp}/v.mp4"], ["The prompt is empty"]),
    (["generate", "a cat", "--prompts", "{tmp}/prompts.txt"], ["not both"]),
    (["generate", "--prompts", "{tmp}/empty.txt", "--out", "{tmp}/vids"], ["holds no prompt", "one prompt per line"]),
    (["generate", "--prompts", "{tmp}/missing.txt"], ["no such file"]),
    (["generate", "--prompts", "{tmp}/prompts.txt", "--out", "{tmp}/notes.txt"], ["is a file; a folder is expected"]),
    (["generate", "--prompts", "{tmp}/prompts.txt", "--out", "{tmp}/clip.mp4"], ["names a folder"]),
    (["generate", "--prompts", "{tmp}/prompts.txt", "--out", "{tmp}/busy"], ["already exists and is not empty",
                                                                             "--overwrite"]),
    (["generate", "a cat", "--out", "{tmp}/taken.mp4"], ["taken.mp4' already exists", "--overwrite"]),
    (["generate", "a cat", "--out", "{tmp}/busy"], ["is a folder; a file path is expected"]),
    (["generate", "a cat", "--out", "{tmp}/busy", "--overwrite"], ["is a folder; a file path is expected"]),
    (["generate", "a cat", "--out", "{tmp}/v.avi"], ["--out expects a .mp4 file", "v.avi"]),
    (["generate", "a cat", "--out", "{tmp}/notes.txt/v.mp4"], ["is a file, so no folder can be made there"]),
    # analyze
    (A + ["--queries", "1,x"], ["--queries must be 'frames' or comma-separated", "'1,x'"]),
    (A + ["--queries", ""], ["--queries must be"]),
    (A + ["--queries", "-3"], ["--queries must be", "non-negative"]),
    (["analyze", "--out", "{tmp}/analysis"], ["already exists and is not empty", "--overwrite"]),
    (["analyze", "--out", "{tmp}/notes.txt", "--overwrite"], ["is a file; a folder is expected"]),
    (A + ["--no-base", "--no-repvideo"], ["not allowed with argument"]),
    (A + ["--device", "cuda:7"], ["--device cuda:7"]),
    (A + ["--dtype", "half", "--device", "cpu"], ["fp16 runs on GPUs only"]),
    (A + ["--gates", "{tmp}/nogates"], ["without config.json"]),
    (A + ["--model", UNCACHED], ["not in the Hugging Face cache"]),
    (A + ["--frames", "10"], ["Use --frames 9 or --frames 17"]),
    # bench
    (B + ["--out", "{tmp}/notes.txt"], ["is a file; pass a folder"]),
    (B + ["--out", "{tmp}/bench"], ["already holds", "bench-tiny.json", "--overwrite"]),
    (B + ["--repeats", "0"], ["--repeats must be a positive integer"]),
    (B + ["--warmup", "-1"], ["--warmup must be a non-negative integer"]),
    (B + ["--window", "0"], ["--window must be a positive integer"]),
    (["bench", "--size", "huge"], ["invalid choice: 'huge'"]),
    (["bench", "--size", "tiny", "--device", "nonsense"], ["--device expects cpu, cuda"]),
    (["bench", "--size", "2b", "--device", "cpu"], ["needs a CUDA GPU", "--size medium"]),
    (["bench", "--size", "tiny", "--device", "cuda:7"], ["--device cuda:7"]),
    # convert
    (["convert", "--sat", "{tmp}/nowhere", "--out", "{tmp}/conv"], ["--sat", "does not exist"]),
    (["convert", "--out", "{tmp}/conv"], ["required: --sat"]),
    (C + ["--max-shard-size", "lots"], ["--max-shard-size expects a positive size like 2GB", "'lots'"]),
    (C + ["--max-shard-size", "0"], ["--max-shard-size expects a positive size"]),
    (["convert", "--sat", "{tmp}/notes.txt", "--out", "{tmp}/taken.mp4", "--overwrite"],
     ["is a file; a folder is expected"]),
    (["convert", "--sat", "{tmp}/notes.txt", "--out", "{tmp}/busy"], ["already exists and is not empty"]),
    (C + ["--config", "{tmp}/missing.json"], ["--config", "does not exist"]),
    (C + ["--config", "{tmp}/nomodel"], ["--config", "is a folder; a file is expected"]),
    (C + ["--base", "{tmp}/nomodel"], ["--base", "without model_index.json"]),
    (C + ["--base", UNCACHED], ["--base", "not in the Hugging Face cache"]),
    (C + ["--dtype", "fp8"], ["--dtype must be one of"]),
    (C, ["Could not read SAT checkpoint", "notes.txt", "corrupt, truncated or not a torch checkpoint"]),
    # export-sat
    (["export-sat", "--model", "{tmp}/nowhere", "--out", "{tmp}/sat"], ["--model", "does not exist"]),
    (["export-sat", "--model", "{tmp}/notes.txt", "--out", "{tmp}/sat"], ["--model", "is a file"]),
    (["export-sat", "--model", "{tmp}/nomodel", "--out", "{tmp}/sat"], ["has no config.json"]),
    (["export-sat", "--model", "{models}/wan", "--out", "{tmp}/sat"], ["describes a WanTransformer3DModel",
                                                                       "not a CogVideoXTransformer3DModel"]),
    (["export-sat", "--model", "{models}/cvvae", "--out", "{tmp}/sat"], ["describes a CVVAEModel"]),
    (E[:3] + ["--out", "{tmp}/notes.txt", "--overwrite"], ["is a file; a folder is expected"]),
    (E[:3] + ["--out", "{tmp}/busy"], ["already exists and is not empty"]),
    (E + ["--iteration", "-1"], ["--iteration must be a non-negative integer"]),
    (E + ["--gates", "{tmp}/nogates"], ["--gates", "without config.json"]),
    (E + ["--gates", UNCACHED], ["--gates", "not in the Hugging Face cache"]),
    (E, ["No RepVideo gates to export", "--gates"]),
]


@pytest.mark.parametrize("argv, fragments", ROWS)
def test_bad_input_is_refused_in_one_line_before_any_work(argv, fragments, place, models, capsys):
    names = {"tmp": place, "models": models}
    assert_refused([arg.format(**names) for arg in argv], fragments, capsys, watch=[place, models])


def test_the_table_covers_every_command_with_at_least_40_rows():
    commands = [(row.values if hasattr(row, "values") else row)[0][0] for row in ROWS]
    assert len(ROWS) >= 40 and set(commands) == set(MY_COMMANDS)


# --- Ctrl-C, a corrupt cache, internal errors --------------------------------------------------------------------


def _interrupt_while_writing(path, *args, **kwargs):
    with open(path, "wb") as handle:
        handle.write(b"half a video")
    raise KeyboardInterrupt


def test_ctrl_c_while_writing_a_video_exits_130_and_leaves_no_partial_file(place, capsys, monkeypatch):
    import repvideo_diffusers.utils.video as video

    monkeypatch.setattr(video, "write_video", lambda frames, path, **kw: _interrupt_while_writing(path))
    assert_refused(["generate", "a cat", "--steps", "1", "--out", str(place / "cat.mp4")], ["interrupted (Ctrl-C)"],
                capsys, watch=[place], code=130)


def test_ctrl_c_during_generation_of_a_prompts_folder_exits_130_and_writes_nothing(place, capsys, monkeypatch):
    from diffusers import CogVideoXPipeline

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(CogVideoXPipeline, "__call__", interrupted)
    assert_refused(["generate", "--prompts", str(place / "prompts.txt"), "--out", str(place / "videos")],
                ["interrupted (Ctrl-C)"], capsys, watch=[place], code=130)


def test_ctrl_c_while_saving_an_analysis_leaves_the_folder_as_it_was(place, capsys, monkeypatch):
    import repvideo_diffusers.analysis.plots as plots

    def interrupted(report, path):
        path.write_bytes(b"half a figure")
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_gates", interrupted)
    assert_refused(["analyze", "--steps", "1", "--no-base", "--out", str(place / "analysis"), "--overwrite"],
                ["interrupted (Ctrl-C)"], capsys, watch=[place], code=130)


def test_a_corrupt_tiny_cache_says_which_folder_to_delete(tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    cache = tmp_path / "cache"
    shutil.copytree(tiny_pipeline_dir, cache / tiny_pipeline_dir.name)
    (cache / tiny_pipeline_dir.name / "transformer" / "config.json").write_text("{ not json")
    monkeypatch.setenv("REPVIDEO_CACHE", str(cache))
    assert_refused(["generate", "a cat", "--out", str(tmp_path / "v.mp4")],
                ["cached tiny pipeline", f"Delete '{cache / tiny_pipeline_dir.name}' and rerun"], capsys,
                watch=[tmp_path])


@pytest.mark.parametrize("debug", ["", "--debug", "env"])
def test_an_internal_error_is_one_line_with_exit_1_and_a_traceback_only_on_request(debug, place, capsys,
                                                                                    monkeypatch):
    import repvideo_diffusers.generation as generation

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(generation, "generate_videos", broken)
    if debug == "env":
        monkeypatch.setenv("REPVIDEO_DEBUG", "1")
    argv = ["generate", "a cat", "--steps", "1", "--out", str(place / "v.mp4"), *([debug] if debug == "--debug" else [])]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert ("Traceback (most recent call last)" in err) == bool(debug)
    lines = [line for line in err.splitlines() if line.startswith("repvideo generate:")]  # (progress bars aside)
    assert len(lines) == 1 and lines[0].startswith("repvideo generate: internal error"), err
    assert "RuntimeError: boom" in lines[0]
    if not debug:
        assert "--debug" in lines[0] and "REPVIDEO_DEBUG=1" in lines[0]
    assert not (place / "v.mp4").exists()


# --- help: no model library to build it, a default for every option ------------------------------------------------


def test_building_the_parser_imports_neither_torch_nor_diffusers():
    code = ("import sys; from repvideo_diffusers.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'accelerate') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _commands():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and "generate" in a.choices)  # noqa: SLF001
    return subparsers.choices


@pytest.mark.parametrize("command", MY_COMMANDS)
def test_every_option_in_help_states_its_default_or_is_required(command):
    parser = _commands()[command]
    formatter = parser.formatter_class(prog=parser.prog)
    for action in parser._actions:  # noqa: SLF001 - argparse's list of options
        if not action.option_strings or action.help == "==SUPPRESS==" or action.dest == "help":
            continue
        text = formatter._get_help_string(action)  # noqa: SLF001 - the text --help prints for the option
        assert action.required or "default" in text.lower(), f"{command} {action.option_strings[0]}: {text!r}"
    assert "(default" in parser.format_help()

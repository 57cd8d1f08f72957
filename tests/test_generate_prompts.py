"""`repvideo generate --prompts FILE`: one video per prompt, split between processes under `accelerate launch`."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from repvideo_diffusers.cli import main
from repvideo_diffusers.utils.video import read_video

WORKTREE = Path(__file__).resolve().parents[1]
PROMPTS = ["a red ball rolls", "waves on a beach", "a cat jumps", "snow falls on a city", "a paper boat"]


def _prompts_file(tmp_path, prompts=PROMPTS, blank_lines=True):
    path = tmp_path / "prompts.txt"
    text = "\n\n".join(prompts) if blank_lines else "\n".join(prompts)
    path.write_text(text + "\n")
    return path


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(WORKTREE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["HF_HUB_OFFLINE"] = "1"
    env["OMP_NUM_THREADS"] = "1"  # two processes on a small CI machine
    return env


def test_prompts_file_writes_one_numbered_video_per_prompt_seeded_by_its_number(tmp_path, tiny_pipeline_dir):
    out = tmp_path / "videos"
    assert main(["generate", "--prompts", str(_prompts_file(tmp_path, PROMPTS[:3])), "--out", str(out),
                 "--steps", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["0000.mp4", "0001.mp4", "0002.mp4"]  # blank lines skipped
    # Video k is exactly what a single-prompt run with seed --seed + k gives.
    assert main(["generate", PROMPTS[1], "--seed", "1", "--steps", "2", "--out", str(tmp_path / "one.mp4")]) == 0
    batch, single = read_video(out / "0001.mp4")[0], read_video(tmp_path / "one.mp4")[0]
    assert np.abs(batch.astype(int) - single.astype(int)).max() == 0
    other = read_video(out / "0000.mp4")[0]
    assert np.abs(batch.astype(int) - other.astype(int)).mean() > 1.0  # different prompt and seed: different video


@pytest.mark.slow
def test_accelerate_launch_two_processes_writes_every_video_exactly_once(tmp_path, tiny_pipeline_dir):
    out = tmp_path / "videos"
    # `--multi_gpu` selects accelerate's torchrun launcher; with no GPU the processes run on the CPU over gloo.
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "repvideo_diffusers", "generate", "--prompts", str(_prompts_file(tmp_path)),
               "--out", str(out), "--steps", "2"]
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{i:04d}.mp4" for i in range(len(PROMPTS))]
    # Tokens, not lines: torchrun starts the workers unbuffered, so two processes' lines can interleave.
    written = re.findall(r"wrote (\S+\.mp4)", result.stdout)
    assert sorted(Path(path).name for path in written) == [f"{i:04d}.mp4" for i in range(len(PROMPTS))]  # once each
    ranks = re.findall(r"\[process (\d)/2\]", result.stdout)
    assert (ranks.count("0"), ranks.count("1")) == (3, 2)  # accelerate's split of 5 prompts
    # The files do not depend on the number of processes: video 4 (written by process 1) equals a 1-process run.
    assert main(["generate", PROMPTS[4], "--seed", "4", "--steps", "2", "--out", str(tmp_path / "one.mp4")]) == 0
    assert np.array_equal(read_video(out / "0004.mp4")[0], read_video(tmp_path / "one.mp4")[0])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "a cat", "--prompts", "{prompts}"], "not both"),
        (["generate"], "No prompt"),
        (["generate", "--prompts", "{missing}"], "no such file"),
        (["generate", "--prompts", "{empty}"], "holds no prompt"),
        (["generate", "--prompts", "{prompts}", "--out", "{file}"], "is a file"),
        (["generate", "--prompts", "{prompts}", "--out", "{dir}/clip.mp4"], "names a folder"),
    ],
)
def test_bad_prompt_arguments_fail_with_a_clear_error_and_write_nothing(tmp_path, capsys, argv, message):
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "taken").write_text("keep me")
    names = {"prompts": _prompts_file(tmp_path), "missing": tmp_path / "nope.txt", "empty": tmp_path / "empty.txt",
             "file": tmp_path / "taken", "dir": tmp_path}
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([arg.format(**names) for arg in argv]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "taken").read_text() == "keep me"

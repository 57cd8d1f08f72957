"""The error policy of the commands that train or reconstruct (train, vae reconstruct, vae train), one row per bad
input: each must end in exit code 2 and one line naming what was expected, what was found and the fix, before any
model work, with nothing on disk changed (`assert_refused`). Then what never loses work: ``train`` on a folder that
holds a run (refused, ``--resume``, ``--overwrite`` that keeps the old run until the new one has a checkpoint), and
Ctrl-C (exit 130, no partial output, earlier checkpoints intact and resumable); then the old flag spellings.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from cli_checks import assert_refused, snapshot
from repvideo_diffusers.cli import build_parser, main
from train_helpers import write_clips

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _truncate(path):
    path.write_bytes(path.read_bytes()[:200])  # a download or a save cut short


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """What the rows read (never written): captioned clips, a tiny CV-VAE and image VAE, broken copies of both."""
    from cvvae_helpers import tiny_image_vae
    from repvideo_diffusers.cvvae import CVVAEModel
    from repvideo_diffusers.utils.video import write_video

    root = tmp_path_factory.mktemp("inputs")
    write_clips(root / "clips", ["stripes 0", "stripes 1"], frames=12, height=72, width=80)
    (root / "mp4s").mkdir()
    write_video(torch.randint(0, 255, (6, 40, 40, 3), dtype=torch.uint8).numpy(), root / "mp4s" / "a.mp4", fps=8)
    (root / "not-a-video.mp4").write_text("this is text")
    CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None).save_pretrained(root / "vae")
    shutil.copytree(root / "vae", root / "badvae")
    _truncate(root / "badvae" / "diffusion_pytorch_model.safetensors")
    tiny_image_vae().save_pretrained(root / "image_vae")
    shutil.copytree(root / "image_vae", root / "bad_image_vae")
    _truncate(root / "bad_image_vae" / "diffusion_pytorch_model.safetensors")
    (root / "gates").mkdir()
    (root / "gates" / "config.json").write_text("{}")
    (root / "gates" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{}")
    (root / "badmodel" / "transformer").mkdir(parents=True)
    (root / "badmodel" / "model_index.json").write_text("{}")
    shutil.copy(root / "badvae" / "diffusion_pytorch_model.safetensors", root / "badmodel" / "transformer")
    (root / "nothing").mkdir()
    (root / "nothing" / "readme.txt").write_text("no clips here")
    return root


@pytest.fixture
def place(tmp_path):
    """A working folder with what the rows must not touch: a finished run, an existing video, a stray file."""
    (tmp_path / "run" / "checkpoints" / "checkpoint-2").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "taken.mp4").write_text("keep me")
    (tmp_path / "file").write_text("a file, not a folder")
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "0123abcd.safetensors").write_bytes(b"garbage, not safetensors")
    return tmp_path


T = ["train", "--data", "{in}/clips", "--out", "{tmp}/new", "--max-steps", "2", "--report-to", "none"]
R = ["vae", "reconstruct", "--vae", "{in}/vae", "--video", "{in}/mp4s/a.mp4", "--out", "{tmp}/out.mp4",
     "--device", "cpu"]
V = ["vae", "train", "--image-vae", "{in}/image_vae", "--data", "{in}/mp4s", "--out", "{tmp}/vae-run",
     "--max-steps", "2", "--num-frames", "5", "--resolution", "32"]


def _set(argv, flag, value):
    """``argv`` with ``flag``'s value replaced (or the flag added)."""
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value] if value is not None else [flag]
    return argv


ROWS = [
    # repvideo train
    ("train-out-is-a-file", _set(T, "--out", "{tmp}/file"), ["--out", "is a file", "folder"]),
    ("train-out-holds-a-run", _set(T, "--out", "{tmp}/run"), ["already holds a run", "--resume latest", "--overwrite"]),
    ("train-resume-and-overwrite", _set(_set(T, "--resume", "latest"), "--overwrite", None),
     ["--resume", "--overwrite", "not both"]),
    pytest.param("train-fp16-on-cpu", _set(T, "--mixed-precision", "fp16"),
                 ["--mixed-precision fp16 needs a CUDA GPU", "--mixed-precision bf16"], marks=NO_CUDA),
    ("train-mixed-precision-fp32", _set(T, "--mixed-precision", "float32"), ["--mixed-precision", "no, fp16, bf16"]),
    ("train-corrupt-precompute-entry", _set(T, "--precompute-dir", "{tmp}/cache"),
     ["--precompute-dir entry", "0123abcd.safetensors", "Delete that file", "the whole folder"]),
    ("train-precompute-dir-is-a-file", _set(T, "--precompute-dir", "{tmp}/file"), ["--precompute-dir", "is a file"]),
    ("train-truncated-gates", _set(T, "--gates", "{in}/gates"),
     ["--gates", "diffusion_pytorch_model.safetensors", "truncated or corrupt"]),
    ("train-truncated-model-weights", _set(T, "--model", "{in}/badmodel"),
     ["--model", "transformer/diffusion_pytorch_model.safetensors", "truncated or corrupt", "Download"]),
    ("train-model-missing", _set(T, "--model", "{tmp}/nowhere"), ["--model", "no such folder"]),
    ("train-max-steps-0", _set(T, "--max-steps", "0"), ["--max-steps must be a positive integer", "'0'"]),
    ("train-learning-rate-negative", _set(T, "--learning-rate", "-1"), ["--learning-rate must be a positive number"]),
    ("train-batch-size-0", _set(T, "--batch-size", "0"), ["--batch-size must be a positive integer"]),
    ("train-window-0", _set(T, "--window", "0"), ["--window must be a positive integer"]),
    ("train-gate-init-out-of-range", _set(T, "--gate-init", "-3"), ["--gate-init must be in [0, 1]", "-3"]),
    ("train-data-missing", _set(T, "--data", "{tmp}/nope"), ["--data", "does not exist", "metadata.jsonl"]),
    ("train-lr-scheduler-unknown", _set(T, "--lr-scheduler", "nope"), ["--lr-scheduler must be one of", "cosine"]),
    ("train-resume-not-a-checkpoint", _set(T, "--resume", "{tmp}/file"), ["--resume", "not a checkpoint folder"]),
    ("train-num-frames-not-1-plus-4k", _set(T, "--num-frames", "8"), ["--num-frames must be 1 + 4k", "Use 5"]),
    # repvideo vae reconstruct
    pytest.param("rec-device-cuda-on-cpu", _set(R, "--device", "cuda"), ["--device cuda", "no CUDA", "--device cpu"],
                 marks=NO_CUDA),
    ("rec-fp16-on-cpu", _set(R, "--dtype", "fp16"), ["--dtype fp16", "--dtype fp32"]),
    ("rec-dtype-unknown", _set(R, "--dtype", "float64"), ["--dtype", "fp32, fp16, bf16"]),
    ("rec-max-frames-0", _set(R, "--max-frames", "0"), ["--max-frames must be a positive integer"]),
    ("rec-video-missing", _set(R, "--video", "{tmp}/missing.mp4"), ["--video", "does not exist"]),
    ("rec-video-not-a-video", _set(R, "--video", "{in}/not-a-video.mp4"), ["--video", "could not be read as a video"]),
    ("rec-out-exists", _set(R, "--out", "{tmp}/taken.mp4"), ["taken.mp4", "already exists", "--overwrite"]),
    ("rec-out-is-a-folder", _set(R, "--out", "{tmp}/folder.mp4"), ["--out", "is a folder"]),
    ("rec-out-not-mp4", _set(R, "--out", "{tmp}/out.txt"), ["--out expects a .mp4 file"]),
    ("rec-out-under-a-file", _set(R, "--out", "{tmp}/file/x.mp4"), ["is a file, so no folder can be made there"]),
    ("rec-vae-missing", _set(R, "--vae", "{tmp}/nowhere"), ["No CV-VAE config at", "does not exist", "--subfolder"]),
    ("rec-vae-truncated", _set(R, "--vae", "{in}/badvae"),
     ["--vae", "diffusion_pytorch_model.safetensors", "truncated or corrupt"]),
    ("rec-tile-size-20", _set(R, "--tile-size", "20"), ["--tile-size", "multiple of 8 pixels", "Use e.g. 16"]),
    ("rec-tile-overlap-1.5", _set(R, "--tile-overlap", "1.5"), ["--tile-overlap must be in [0, 1)"]),
    ("rec-chunk-frames-6", _set(R, "--chunk-frames", "6"), ["--chunk-frames must be a multiple of 4", "Use 4"]),
    # repvideo vae train
    ("vae-image-vae-missing", _set(V, "--image-vae", "{tmp}/nope"), ["--image-vae", "does not exist"]),
    ("vae-image-vae-not-a-vae", _set(V, "--image-vae", "{in}/nothing"),
     ["--image-vae", "has no config.json", "--image-vae-subfolder"]),
    ("vae-image-vae-truncated", _set(V, "--image-vae", "{in}/bad_image_vae"),
     ["--image-vae", "diffusion_pytorch_model.safetensors", "truncated or corrupt"]),
    ("vae-init-missing", _set(V, "--init", "{tmp}/nope"), ["--init", "does not exist", "a CV-VAE folder"]),
    ("vae-resolution-0", _set(V, "--resolution", "0"), ["--resolution must be a positive integer"]),
    ("vae-resolution-20", _set(V, "--resolution", "20"), ["--resolution must be a positive multiple of 8"]),
    ("vae-max-steps-negative", _set(V, "--max-steps", "-1"), ["--max-steps must be a positive integer", "'-1'"]),
    ("vae-num-frames-6", _set(V, "--num-frames", "6"), ["--num-frames must be 1 + 4k", "Use 5"]),
    ("vae-learning-rate-0", _set(V, "--learning-rate", "0"), ["--learning-rate must be a positive number"]),
    ("vae-batch-size-0", _set(V, "--batch-size", "0"), ["--batch-size must be a positive integer"]),
    ("vae-kl-weight-negative", _set(V, "--kl-weight", "-1"), ["--kl-weight must be a non-negative number"]),
    pytest.param("vae-fp16-on-cpu", _set(V, "--mixed-precision", "fp16"),
                 ["--mixed-precision fp16 needs a CUDA GPU", "bf16"], marks=NO_CUDA),
    ("vae-out-is-a-file", _set(V, "--out", "{tmp}/file"), ["--out", "is a file"]),
    ("vae-out-holds-a-run", _set(V, "--out", "{tmp}/run"), ["already holds a run", "--resume latest", "--overwrite"]),
    ("vae-data-missing", _set(V, "--data", "{tmp}/nope"), ["--data", "does not exist", ".mp4"]),
    ("vae-data-without-mp4", _set(V, "--data", "{in}/nothing"), ["--data", "holds no .mp4 files"]),
    ("vae-resume-not-a-checkpoint", _set(V, "--resume", "{tmp}/file"), ["--resume", "not a checkpoint folder"]),
]


@pytest.mark.parametrize("name,argv,fragments", ROWS, ids=[r.values[0] if hasattr(r, "values") else r[0]
                                                          for r in ROWS])
def test_bad_input_is_one_clear_line_before_any_work(name, argv, fragments, inputs, place, capsys):
    argv = [a.replace("{in}", str(inputs)).replace("{tmp}", str(place)) for a in argv]
    assert_refused(argv, fragments, capsys, watch=[place, inputs])


def test_the_table_covers_every_command_with_at_least_25_rows():
    names = [r.values[0] if hasattr(r, "values") else r[0] for r in ROWS]
    assert len(names) >= 25 and len(set(names)) == len(names)
    assert {n.split("-")[0] for n in names} == {"train", "rec", "vae"}


# ------------------------------------------------------------------------------------------------------------------
# repvideo train: a folder holding a run is continued (--resume) or replaced (--overwrite), never mixed
# ------------------------------------------------------------------------------------------------------------------

def _train(data, out, *extra):
    return main(["train", "--data", str(data), "--out", str(out), "--max-steps", "4", "--checkpoint-every", "2",
                 "--learning-rate", "1e-2", "--report-to", "none", *extra])


def _gates(out):
    return load_file(out / "repvideo" / "diffusion_pytorch_model.safetensors")["gate"]


def _hidden(folder):
    return sorted(str(p) for p in folder.parent.rglob(".*"))


def test_train_overwrite_replaces_the_old_run_only_once_the_new_one_has_a_checkpoint(inputs, tmp_path, capsys,
                                                                                       monkeypatch):
    from repvideo_diffusers.training import trainer

    out = tmp_path / "run"
    assert _train(inputs / "clips", out) == 0
    old = snapshot(out)
    old_gates = _gates(out)

    # --overwrite, interrupted before its first checkpoint: the old run is back, byte for byte, nothing hidden left.
    real_step = trainer._optimizer_step
    monkeypatch.setattr(trainer, "_optimizer_step", lambda run, step: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert _train(inputs / "clips", out, "--overwrite", "--seed", "1") == 130
    assert "interrupted" in capsys.readouterr().err
    assert snapshot(out) == old and _hidden(out) == []

    # --overwrite that runs: only the new run's checkpoints (checkpoint-1, -2), not a mix with the old -2, -4.
    monkeypatch.setattr(trainer, "_optimizer_step", real_step)
    assert _train(inputs / "clips", out, "--overwrite", "--seed", "1", "--max-steps", "2", "--checkpoint-every",
                  "1") == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-1", "checkpoint-2"]
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 2
    assert not torch.equal(_gates(out), old_gates) and _hidden(out) == []


def test_train_ctrl_c_exits_130_keeps_complete_checkpoints_and_resumes_to_the_uninterrupted_result(
        inputs, tmp_path, capsys, monkeypatch):
    from repvideo_diffusers.training import trainer

    assert _train(inputs / "clips", tmp_path / "straight") == 0

    real_step = trainer._optimizer_step

    def interrupted_at_step_3(run, step):
        if step == 2:
            raise KeyboardInterrupt
        return real_step(run, step)

    monkeypatch.setattr(trainer, "_optimizer_step", interrupted_at_step_3)
    out = tmp_path / "run"
    capsys.readouterr()
    assert _train(inputs / "clips", out) == 130
    err = capsys.readouterr().err
    assert "repvideo train: interrupted (Ctrl-C)" in err and "Traceback" not in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2"]  # complete, nothing partial
    assert not (out / "repvideo").exists() and _hidden(out) == []

    # The same command again is refused (the folder holds a run); --resume latest finishes it exactly.
    monkeypatch.setattr(trainer, "_optimizer_step", real_step)
    assert _train(inputs / "clips", out) == 2
    assert "--resume latest" in capsys.readouterr().err
    assert _train(inputs / "clips", out, "--resume", "latest") == 0
    assert torch.equal(_gates(out), _gates(tmp_path / "straight"))


def test_train_ctrl_c_while_saving_a_checkpoint_leaves_no_partial_folder(inputs, tmp_path, monkeypatch):
    from accelerate import Accelerator

    def interrupted_save(self, output_dir, **kwargs):
        (__import__("pathlib").Path(output_dir) / "optimizer.bin").write_bytes(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Accelerator, "save_state", interrupted_save)
    assert _train(inputs / "clips", tmp_path / "run") == 130
    assert list(tmp_path.iterdir()) == []  # a new run with no complete output leaves no folder behind


# ------------------------------------------------------------------------------------------------------------------
# Old flag spellings: hidden aliases that still work (one note on stderr)
# ------------------------------------------------------------------------------------------------------------------

ALIASES = [
    (["train", "--data", "d", "--output-dir", "o"], ["train", "--data", "d", "--out", "o"], "--output-dir"),
    (["vae", "train", "--image-vae", "i", "--videos", "d", "--out", "o"],
     ["vae", "train", "--image-vae", "i", "--data", "d", "--out", "o"], "--videos"),
    (["vae", "train", "--image-vae", "i", "--data", "d", "--output", "o"],
     ["vae", "train", "--image-vae", "i", "--data", "d", "--out", "o"], "--output"),
    (["vae", "train", "--image-vae", "i", "--data", "d", "--out", "o", "--steps", "7"],
     ["vae", "train", "--image-vae", "i", "--data", "d", "--out", "o", "--max-steps", "7"], "--steps"),
    (["vae", "train", "--image-vae", "i", "--data", "d", "--out", "o", "--lr", "0.5"],
     ["vae", "train", "--image-vae", "i", "--data", "d", "--out", "o", "--learning-rate", "0.5"], "--lr"),
]


@pytest.mark.parametrize("old,new,flag", ALIASES, ids=[a[2] for a in ALIASES])
def test_old_flag_spellings_parse_like_the_new_ones_and_say_so(old, new, flag, capsys):
    parser = build_parser()
    new_args = vars(parser.parse_args(new))
    assert "note" not in capsys.readouterr().err
    old_args = vars(parser.parse_args(old))
    assert old_args == new_args
    err = capsys.readouterr().err
    assert f"note: {flag} is now" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("command", [["train"], ["vae", "reconstruct"], ["vae", "train"]])
def test_every_flag_of_these_commands_shows_its_default_in_help(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command, "--help"])
    assert "(default: " in capsys.readouterr().out
    # Every option that is not required says its default (in its own words or the formatter's).
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command[0]]  # noqa: SLF001 - argparse's parser tree
    if len(command) == 2:
        sub = sub._subparsers._group_actions[0].choices[command[1]]  # noqa: SLF001
    for action in sub._actions:  # noqa: SLF001
        required = action.required or action in getattr(sub, "_required_with_alias", ())
        if action.help == "==SUPPRESS==" or required or not action.option_strings or action.dest == "help":
            continue
        shown = sub.formatter_class(prog="x")._get_help_string(action)  # noqa: SLF001 - the formatter's hook
        assert "default" in shown.lower(), f"{action.option_strings[0]}: {shown!r}"

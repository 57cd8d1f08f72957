"""`repvideo vae train` never loses a run (checkpoints, exact resume, Ctrl-C, --overwrite), and `vae reconstruct`
writes where it is told without replacing anything unasked, with SSIM that can be skipped and equals the 2D-window
definition."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from cli_checks import snapshot
from cvvae_helpers import tiny_image_vae
from repvideo_diffusers.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A tiny image VAE (the CV-VAE is inflated from it), two short clips, and a tiny CV-VAE for reconstruction."""
    from repvideo_diffusers.cvvae import CVVAEModel
    from repvideo_diffusers.utils.video import write_video

    root = tmp_path_factory.mktemp("vae-inputs")
    tiny_image_vae().save_pretrained(root / "image_vae")
    (root / "clips").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_video(rng.integers(0, 255, (6, 40, 40, 3), dtype=np.uint8), root / "clips" / f"{name}.mp4", fps=8)
    torch.manual_seed(0)
    CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None).save_pretrained(root / "vae")
    write_video(rng.integers(0, 255, (7, 36, 40, 3), dtype=np.uint8), root / "in.mp4", fps=8)
    return root


def _vae_train(folders, out, *extra):
    return main(["vae", "train", "--image-vae", str(folders / "image_vae"), "--data", str(folders / "clips"),
                 "--out", str(out), "--max-steps", "4", "--checkpoint-every", "2", "--num-frames", "5",
                 "--resolution", "32", "--learning-rate", "1e-3", "--frame-choice", "random", *extra])


def _weights(out):
    return load_file(out / "diffusion_pytorch_model.safetensors")


def _max_difference(a, b):
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_vae_train_resumed_from_a_checkpoint_ends_where_the_uninterrupted_run_ends(folders, tmp_path, capsys):
    from repvideo_diffusers.cvvae import load_cvvae

    straight = tmp_path / "straight"
    assert _vae_train(folders, straight) == 0
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert {"config.json", "diffusion_pytorch_model.safetensors", "training_config.json"} <= {
        p.name for p in straight.iterdir()}
    assert load_cvvae(str(straight)).config.ch == 32

    # An interrupted run: only checkpoint-2 made it to disk. Steps 3-4 again from it give the same weights.
    resumed = tmp_path / "resumed"
    shutil.copytree(straight / "checkpoints" / "checkpoint-2", resumed / "checkpoints" / "checkpoint-2")
    capsys.readouterr()
    assert _vae_train(folders, resumed, "--resume", "latest") == 0
    out = capsys.readouterr().out
    assert "step 2:" in out and "step 1:" not in out  # only the missing steps ran
    assert _max_difference(_weights(straight), _weights(resumed)) <= 1e-6
    initial = load_file(straight / "checkpoints" / "checkpoint-2" / "model.safetensors")
    assert _max_difference(_weights(straight), initial) > 0  # steps 3-4 did change the weights

    # Resuming with settings that change what the steps see is refused, the checkpoint left alone.
    before = snapshot(resumed)
    assert _vae_train(folders, resumed, "--resume", "latest", "--batch-size", "2") == 2
    assert "different settings (global_batch: 1 there, 2 now)" in capsys.readouterr().err
    assert snapshot(resumed) == before


def test_vae_train_ctrl_c_exits_130_with_complete_checkpoints_only_and_a_limit_on_their_number(
        folders, tmp_path, capsys, monkeypatch):
    from repvideo_diffusers.cvvae import training

    calls = {"n": 0}
    real = training.compute_losses

    def interrupted_at_step_4(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "compute_losses", interrupted_at_step_4)
    out = tmp_path / "run"
    assert _vae_train(folders, out, "--checkpoint-every", "1", "--checkpoints-total-limit", "2") == 130
    assert "repvideo vae train: interrupted (Ctrl-C)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]  # no final model, nothing half-written
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-3"]
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []

    monkeypatch.setattr(training, "compute_losses", real)
    assert _vae_train(folders, out, "--resume", "latest", "--checkpoint-every", "1") == 0
    assert (out / "diffusion_pytorch_model.safetensors").is_file()


def test_vae_train_overwrite_starts_a_new_run_and_keeps_the_old_one_until_it_has_output(folders, tmp_path, capsys,
                                                                                        monkeypatch):
    from repvideo_diffusers.cvvae import training

    out = tmp_path / "run"
    assert _vae_train(folders, out, "--max-steps", "2") == 0
    old = snapshot(out)
    monkeypatch.setattr(training, "compute_losses", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert _vae_train(folders, out, "--overwrite") == 130
    assert snapshot(out) == old and sorted(p.name for p in tmp_path.rglob(".*")) == []
    monkeypatch.undo()
    assert _vae_train(folders, out, "--overwrite", "--checkpoint-every", "3", "--max-steps", "3") == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-3"]


def test_reconstruct_makes_the_out_folder_first_refuses_to_replace_without_overwrite_and_can_skip_ssim(
        folders, tmp_path, capsys):
    from repvideo_diffusers.utils.video import read_video

    out = tmp_path / "no" / "dir" / "x.mp4"
    argv = ["vae", "reconstruct", "--vae", str(folders / "vae"), "--video", str(folders / "in.mp4"), "--out", str(out),
            "--device", "cpu"]
    assert main([*argv, "--no-ssim"]) == 0
    printed = capsys.readouterr().out
    assert "PSNR:" in printed and "SSIM" not in printed
    assert read_video(out)[0].shape == (5, 32, 40, 3)

    stamp = snapshot(tmp_path)
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err and snapshot(tmp_path) == stamp
    assert main([*argv, "--overwrite"]) == 0
    assert "SSIM:" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.mp4"]  # no staging file left


def test_reconstruct_ctrl_c_while_writing_leaves_no_partial_file(folders, tmp_path, capsys, monkeypatch):
    from repvideo_diffusers.utils import video

    def interrupted_write(frames, path, fps=8):
        open(path, "wb").write(b"half a video")
        raise KeyboardInterrupt

    monkeypatch.setattr(video, "write_video", interrupted_write)
    (tmp_path / "keep.txt").write_text("keep me")
    argv = ["vae", "reconstruct", "--vae", str(folders / "vae"), "--video", str(folders / "in.mp4"), "--out",
            str(tmp_path / "x.mp4"), "--device", "cpu", "--no-ssim"]
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def _ssim_2d_reference(x, y, c1=0.01**2, c2=0.03**2):
    """SSIM as Wang et al. define it: one 11x11 Gaussian window (sigma 1.5), "valid" filtering, float64."""
    from repvideo_diffusers.cvvae.metrics import gaussian_window

    x, y = x.transpose(1, 2).flatten(0, 1).double(), y.transpose(1, 2).flatten(0, 1).double()
    window = gaussian_window(11, 1.5)[None, None].repeat(x.shape[1], 1, 1, 1)

    def blur(t):
        return F.conv2d(t, window, groups=x.shape[1])

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    return (((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))).mean().item()


@pytest.mark.parametrize("frames_per_batch", [1, 4, 16])
def test_ssim_equals_the_2d_window_definition(frames_per_batch):
    from repvideo_diffusers.cvvae.metrics import ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 7, 23, 31, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    expected = _ssim_2d_reference(a, b)
    assert 0.3 < expected < 0.99
    assert abs(ssim(a, b, frames_per_batch=frames_per_batch) - expected) <= 1e-12

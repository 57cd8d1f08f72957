"""Shared helpers for the CV-VAE tests: locating the parity fixtures, tiny image VAEs, synthetic videos."""

import os
from pathlib import Path

import pytest
import torch

FIXTURE_NAMES = ("cvvae-v1-tiny", "cvvae-v1-tiny-chunked", "cvvae-sd3-tiny")


def reference_dir() -> Path:
    """``shared/reference/cvvae-fixtures``: ``$REPVIDEO_REFERENCE_DIR`` or found by walking up from the repo.

    CI clones the repository with ``shared/`` beside it (``<clone>/../shared``); a git worktree nested deeper
    finds it the same way, further up. Missing fixtures fail the test: they are the
    ground truth for weight compatibility and must not be skipped silently.
    """
    override = os.environ.get("REPVIDEO_REFERENCE_DIR")
    if override:
        base = Path(override)
        for candidate in (base, base / "cvvae-fixtures", base / "reference" / "cvvae-fixtures"):
            if (candidate / "cvvae-v1-tiny" / "vae" / "config.json").is_file():
                return candidate
        pytest.fail(
            f"REPVIDEO_REFERENCE_DIR={override} holds no CV-VAE fixtures (expected cvvae-v1-tiny/vae/config.json "
            "in it or in its cvvae-fixtures/ or reference/cvvae-fixtures/). Point it at shared/reference."
        )
    candidates = []
    repo_root = Path(__file__).resolve().parents[1]
    for parent in [repo_root, *repo_root.parents]:
        candidates.append(parent / "shared" / "reference" / "cvvae-fixtures")
    for candidate in candidates:
        if (candidate / "cvvae-v1-tiny" / "vae" / "config.json").is_file():
            return candidate
    pytest.fail(
        "CV-VAE parity fixtures not found. Expected shared/reference/cvvae-fixtures beside the repository "
        f"(searched upward from {repo_root}) or REPVIDEO_REFERENCE_DIR pointing at it; looked in: "
        + ", ".join(str(c) for c in candidates[:4])
        + ", ..."
    )


def tiny_image_vae(latent_channels: int = 4, seed: int = 0):
    """A 4-level diffusers AutoencoderKL (32 channels, 32 groups): the shape CV-VAE v1 inflates from."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(32, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=32,
    ).eval()


def smooth_video(frames: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth random video in [-1, 1], ``(1, 3, frames, height, width)``."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, frames, max(2, height // 8), max(2, width // 8), generator=g) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=(frames, height, width), mode="trilinear")

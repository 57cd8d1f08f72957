"""Small mp4 reader/writer on ``imageio.v3`` + the ffmpeg plugin (imageio-ffmpeg ships its own binary).

Kept local to the CV-VAE package until a shared ``repvideo_diffusers.video`` exists.
"""

import os
from typing import Tuple

import numpy as np
import torch


def read_video(path: str) -> Tuple[np.ndarray, float]:
    """Read all frames of a video: ``(uint8 array (frames, height, width, 3), fps)``.

    Example::

        frames, fps = read_video("clip.mp4")
    """
    import imageio.v3 as iio

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Video not found: {path}")
    frames = np.asarray(iio.imread(path, plugin="FFMPEG", index=None))
    if frames.ndim == 3:  # a single frame
        frames = frames[None]
    fps = float(iio.immeta(path, plugin="FFMPEG").get("fps") or 8.0)
    return frames[..., :3], fps


def write_video(path: str, frames: np.ndarray, fps: float = 8.0, quality: int = 9) -> None:
    """Write ``(frames, height, width, 3)`` uint8 frames as an H.264 mp4 at any frame size.

    Example::

        write_video("out.mp4", np.zeros((9, 64, 64, 3), np.uint8), fps=8)
    """
    import imageio.v3 as iio

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # macro_block_size=1: keep the exact frame size instead of imageio's default resize to multiples of 16.
    iio.imwrite(path, np.ascontiguousarray(frames), plugin="FFMPEG", fps=fps, quality=quality, macro_block_size=1)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(t, h, w, 3)`` -> float ``(1, 3, t, h, w)`` in ``[-1, 1]`` (the VAE's input range)."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """float ``(1, 3, t, h, w)`` in ``[-1, 1]`` -> uint8 ``(t, h, w, 3)``."""
    video = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).cpu().numpy()

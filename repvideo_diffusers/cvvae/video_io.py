"""Frames <-> VAE tensors; file I/O is the shared ``repvideo_diffusers.video`` (imageio + ffmpeg)."""

import numpy as np
import torch

from ..video import read_video, write_video  # noqa: F401  (re-exported for the CV-VAE CLI and training)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(t, h, w, 3)`` -> float ``(1, 3, t, h, w)`` in ``[-1, 1]`` (the VAE's input range).

    Example:
        >>> frames_to_tensor(np.full((5, 8, 8, 3), 255, np.uint8)).amin().item()
        1.0
    """
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0


def tensor_to_frames(video: torch.Tensor) -> np.ndarray:
    """float ``(1, 3, t, h, w)`` in ``[-1, 1]`` -> uint8 ``(t, h, w, 3)`` (values outside are clipped).

    Example:
        >>> tensor_to_frames(torch.zeros(1, 3, 2, 4, 4)).shape
        (2, 4, 4, 3)
    """
    video = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).cpu().numpy()

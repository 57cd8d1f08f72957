"""Video files and video tensors: mp4 reading and writing (imageio + the ffmpeg binary shipped by imageio-ffmpeg),
frames <-> tensors in [-1, 1], and the one resize-and-crop that every data path uses."""

from __future__ import annotations

import os

import numpy as np
import torch


def write_video(frames, path: str | os.PathLike, fps: float = 8.0) -> str:
    """Write frames (``(F, H, W, 3)`` uint8, or floats in [0, 1], or a list of PIL images) as an H.264 mp4.

    Example:
        ```python
        >>> import numpy as np, tempfile, os
        >>> from repvideo_diffusers.utils.video import read_video, write_video
        >>> path = os.path.join(tempfile.mkdtemp(), "clip.mp4")
        >>> _ = write_video(np.zeros((5, 32, 48, 3), dtype=np.uint8), path, fps=8)
        >>> read_video(path)[0].shape
        (5, 32, 48, 3)

        ```
    """
    from diffusers.utils import export_to_video

    frames = [np.asarray(frame) for frame in frames]
    if not frames:
        raise ValueError(f"write_video needs at least one frame, got none (path {str(path)!r}).")
    frames = [
        (np.clip(frame, 0.0, 1.0) * 255).round().astype(np.uint8) if frame.dtype != np.uint8 else frame
        for frame in frames
    ]
    height, width = frames[0].shape[:2]
    # Even sizes play everywhere (yuv420p); only fall back to imageio's resizing when the size is odd.
    macro_block_size = 2 if height % 2 or width % 2 else 1
    return export_to_video(frames, str(path), fps=fps, macro_block_size=macro_block_size)


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a video file into ``(frames (F, H, W, 3) uint8, fps)``; raises ``ValueError`` if unreadable."""
    import imageio.v2 as imageio

    if not os.path.isfile(path):
        raise FileNotFoundError(f"Video file {str(path)!r} does not exist.")
    try:
        with imageio.get_reader(str(path), format="FFMPEG") as reader:
            fps = float(reader.get_meta_data().get("fps", 8.0))
            frames = [np.asarray(frame)[..., :3] for frame in reader]
    except Exception as error:  # imageio/ffmpeg raise a variety of types for broken files
        raise ValueError(f"Could not decode video {str(path)!r}: {error}") from error
    if not frames:
        raise ValueError(f"Video {str(path)!r} has no frames.")
    return np.stack(frames), fps


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 ``(t, h, w, 3)`` -> float ``(1, 3, t, h, w)`` in ``[-1, 1]`` (a VAE's input range).

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


def resize_and_center_crop(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize ``(n, c, h, w)`` images so they cover ``height x width`` (aspect kept, antialiased bilinear), then
    centre-crop to exactly that size; values are clamped to ``[-1, 1]``.

    Example:
        >>> resize_and_center_crop(torch.zeros(3, 3, 40, 90), 16, 16).shape
        torch.Size([3, 3, 16, 16])
    """
    scale = max(height / images.shape[-2], width / images.shape[-1])
    size = (max(height, round(images.shape[-2] * scale)), max(width, round(images.shape[-1] * scale)))
    if size != tuple(images.shape[-2:]):
        images = torch.nn.functional.interpolate(images, size=size, mode="bilinear", antialias=True,
                                                 align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    return images[..., top : top + height, left : left + width].clamp(-1, 1)

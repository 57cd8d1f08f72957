"""Reading and writing mp4 files (imageio + the ffmpeg binary shipped by imageio-ffmpeg)."""

from __future__ import annotations

import os

import numpy as np


def write_video(frames, path: str | os.PathLike, fps: float = 8.0) -> str:
    """Write frames (``(F, H, W, 3)`` uint8, or floats in [0, 1], or a list of PIL images) as an H.264 mp4.

    Example:
        ```python
        >>> import numpy as np, tempfile, os
        >>> from repvideo_diffusers.video import read_video, write_video
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

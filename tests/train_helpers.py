"""Synthetic training clips shared by the `repvideo train` tests: real mp4 files with moving stripes."""

import json
from pathlib import Path

import numpy as np

from repvideo_diffusers.utils.video import write_video


def stripes_clip(index: int, frames: int, height: int, width: int, colour_step: float = 0.2,
                 x_period: float = 5.0, y_period: float = 7.0) -> np.ndarray:
    """Moving stripes, different per clip: enough structure for the loss to respond to the gates."""
    t = np.arange(frames)[:, None, None, None]
    x = np.arange(width)[None, None, :, None]
    y = np.arange(height)[None, :, None, None]
    colour = np.array([1.0, 0.5 + colour_step * index, 0.2])[None, None, None, :]
    pixels = (np.sin((x + 3 * t * (index + 1)) / x_period) * 0.5 + 0.5) * colour * (0.6 + 0.4 * np.cos(y / y_period))
    return (np.broadcast_to(pixels, (frames, height, width, 3)) * 255).astype(np.uint8)


def write_clips(folder: Path, captions: list[str], frames: int = 10, height: int = 40, width: int = 48) -> Path:
    """`clip{i}.mp4` per caption plus `metadata.jsonl`, the Hugging Face imagefolder layout."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, caption in enumerate(captions):
        write_video(stripes_clip(i, frames, height, width), folder / f"clip{i}.mp4", fps=8)
        rows.append({"file_name": f"clip{i}.mp4", "text": caption})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder

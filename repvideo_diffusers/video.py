"""Deprecated module path: video files now live in `repvideo_diffusers.utils.video`. Kept for one release."""

import warnings

from .utils.video import read_video, write_video  # noqa: F401

warnings.warn(
    "repvideo_diffusers.video is deprecated and will be removed in the next release: import read_video and "
    "write_video from repvideo_diffusers.utils.video.",
    FutureWarning,
    stacklevel=2,
)

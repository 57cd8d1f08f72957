"""``repvideo generate``."""

from ..generate import register  # noqa: F401

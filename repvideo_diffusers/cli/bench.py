"""``repvideo bench``."""

from ..bench import register  # noqa: F401

"""``repvideo analyze``."""

from ..analysis import register  # noqa: F401

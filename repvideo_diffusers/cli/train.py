"""``repvideo train``."""

from ..training.cli import register  # noqa: F401

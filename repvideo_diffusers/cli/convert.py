"""``repvideo convert``."""

from ..convert import register  # noqa: F401

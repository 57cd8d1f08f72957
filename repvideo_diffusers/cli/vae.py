"""``repvideo vae``."""

from ..cvvae.cli import register  # noqa: F401

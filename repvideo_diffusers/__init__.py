"""repvideo-diffusers: RepVideo (arXiv 2501.08994) and CV-VAE (arXiv 2405.20279) for Hugging Face diffusers.

Importing the package gives every ``diffusers.DiffusionPipeline`` ``enable_repvideo()`` and ``disable_repvideo()``.
"""

__version__ = "0.1.0.dev0"

from .gates import RepVideoGates, load_gates
from .pipeline import install as _install_pipeline_methods
from .repvideo import (
    SUPPORTED_MODELS,
    RepVideoConfig,
    apply_repvideo,
    get_transformer_blocks,
    is_repvideo_applied,
    remove_repvideo,
)

_install_pipeline_methods()

__all__ = [
    "RepVideoConfig",
    "RepVideoGates",
    "SUPPORTED_MODELS",
    "apply_repvideo",
    "get_transformer_blocks",
    "is_repvideo_applied",
    "load_gates",
    "remove_repvideo",
]

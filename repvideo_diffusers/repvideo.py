"""Deprecated module path: the technique now lives in `repvideo_diffusers.core` and the per-model facts in
`repvideo_diffusers.families`. Kept for one release."""

import warnings

from .core.config import RepVideoConfig  # noqa: F401
from .core.hooks import (  # noqa: F401
    SUPPORTED_MODELS,
    ModelSpec,
    RepVideoBlockHook,
    apply_repvideo,
    get_model_spec,
    is_repvideo_applied,
    remove_repvideo,
)
from .families import get_transformer_blocks  # noqa: F401

warnings.warn(
    "repvideo_diffusers.repvideo is deprecated and will be removed in the next release: import from "
    "repvideo_diffusers (RepVideoConfig, apply_repvideo, remove_repvideo) or repvideo_diffusers.families.",
    FutureWarning,
    stacklevel=2,
)

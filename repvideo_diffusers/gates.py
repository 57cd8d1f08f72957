"""Deprecated module path: gates now live in `repvideo_diffusers.core.gates`. Kept for one release."""

import warnings

from .core.gates import (  # noqa: F401
    GATES_SUBFOLDER,
    LIBRARY_NAME,
    RepVideoGates,
    find_saved_gates,
    load_gates,
    resolve_gates,
)

warnings.warn(
    "repvideo_diffusers.gates is deprecated and will be removed in the next release: import RepVideoGates and "
    "load_gates from repvideo_diffusers (or repvideo_diffusers.core.gates).",
    FutureWarning,
    stacklevel=2,
)

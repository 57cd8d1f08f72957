"""Deprecated module path: ``repvideo generate``'s library is `repvideo_diffusers.generation`, its parser
`repvideo_diffusers.cli.generate`, the dtype default `repvideo_diffusers.utils.dtypes`. Kept for one release."""

import warnings

from .cli.generate import add_pipeline_arguments, check_pipeline_arguments, register, run  # noqa: F401
from .generation import load_pipeline, prepare_pipeline, read_prompts, set_attention  # noqa: F401
from .utils.dtypes import default_dtype  # noqa: F401

warnings.warn(
    "repvideo_diffusers.generate is deprecated and will be removed in the next release: import from "
    "repvideo_diffusers.generation (load_pipeline, prepare_pipeline, generate_videos) instead.",
    FutureWarning,
    stacklevel=2,
)

"""Former home of ``repvideo generate``, kept so that ``from repvideo_diffusers.generate import ...`` still works.

The library part now lives in `repvideo_diffusers.generation`, the option parsing in
`repvideo_diffusers.cli.generate`, and the dtype default in `repvideo_diffusers.utils.dtypes`. New code imports
from those; this module only re-exports (it is no library module, so it may name the command line's parsers).
"""

from .cli.generate import add_pipeline_arguments, check_pipeline_arguments, register, run
from .generation import load_pipeline, prepare_pipeline, read_prompts, set_attention
from .utils.dtypes import default_dtype

__all__ = [
    "add_pipeline_arguments",
    "check_pipeline_arguments",
    "default_dtype",
    "load_pipeline",
    "prepare_pipeline",
    "read_prompts",
    "register",
    "run",
    "set_attention",
]

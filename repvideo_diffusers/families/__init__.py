"""The model-family registry: one module per family of video transformers, each holding every fact about it.

Shared code never names a family: it asks `get_family(transformer)`. The built-in families are the modules of this
package (found and imported here, so adding a family is adding one file); your own code adds one with
`register_family(Family(...))`.

Example:
    ```python
    >>> from repvideo_diffusers.families import get_family_by_name, registered_families
    >>> {"CogVideoX", "HunyuanVideo", "LTX-Video", "Mochi", "Wan"} <= set(registered_families())
    True
    >>> [block_list.attribute for block_list in get_family_by_name("HunyuanVideo").blocks]
    ['transformer_blocks', 'single_transformer_blocks']

    ```
"""

import importlib
import pkgutil

from ._registry import (
    AttentionFacts,
    BlockList,
    Family,
    TinyModel,
    TrainingFacts,
    find_family,
    get_family,
    get_family_by_name,
    get_transformer_blocks,
    register_family,
    registered_families,
    stream_positions,
    supported_transformers,
    unregister_family,
)

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "AttentionFacts",
    "BlockList",
    "Family",
    "TinyModel",
    "TrainingFacts",
    "find_family",
    "get_family",
    "get_family_by_name",
    "get_transformer_blocks",
    "register_family",
    "registered_families",
    "stream_positions",
    "supported_transformers",
    "unregister_family",
]

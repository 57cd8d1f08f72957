"""One vocabulary for dtypes and devices across the library and the command line.

Example:
    ```python
    >>> from repvideo_diffusers.utils.dtypes import parse_dtype
    >>> parse_dtype("bf16"), parse_dtype("float16"), parse_dtype(None)
    (torch.bfloat16, torch.float16, None)

    ```
"""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Other spellings people use for the same three dtypes.
DTYPE_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16"}


def parse_dtype(value: str | torch.dtype | None, option: str = "dtype") -> torch.dtype | None:
    """``"fp16"`` / ``"float16"`` / ``torch.float16`` -> ``torch.float16``; ``None`` stays ``None``."""
    if value is None or isinstance(value, torch.dtype):
        return value
    name = DTYPE_ALIASES.get(str(value).lower(), str(value).lower())
    if name not in DTYPES:
        raise ValueError(f"{option} must be one of {', '.join(DTYPES)} (or {', '.join(DTYPE_ALIASES)}), got {value!r}.")
    return DTYPES[name]


def default_device(device: str | torch.device | None = None) -> str:
    """``device`` as given, else ``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    if device is not None:
        return str(device)
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(dtype: str | torch.dtype | None, device: str | torch.device) -> torch.dtype:
    """The dtype asked for, else bf16 on CUDA and fp32 elsewhere."""
    parsed = parse_dtype(dtype)
    if parsed is not None:
        return parsed
    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32

"""Fused attention for every supported family (xformers or PyTorch SDPA) and attention capture.

* `set_attention_kernel(transformer, "auto" | "xformers" | "sdpa")` routes the attention of a video transformer to
  xformers where a real call works on the model's device and dtype, else to PyTorch SDPA, and says which runs;
  `reset_attention_kernel` puts the very same stock processor objects back. How it relates to diffusers' own
  ``transformer.set_attention_backend(...)``: see `repvideo_diffusers.attention.processors`.
* `capture_attention(transformer)` records, per block, the attention rows of a few query tokens (see `capture`).
* `probe_xformers(device, dtype)` is the one xformers probe of the package (CV-VAE uses it too).

Example:
    ```python
    >>> from repvideo_diffusers.attention import capture_attention, reset_attention_kernel, set_attention_kernel
    >>> from repvideo_diffusers.families import get_family_by_name
    >>> transformer, inputs = get_family_by_name("CogVideoX").tiny.build()
    >>> set_attention_kernel(transformer, "auto")  # xformers where it runs, else SDPA
    'sdpa'
    >>> with capture_attention(transformer) as capture:
    ...     _ = transformer(**inputs)
    >>> capture.maps[0].shape  # (batch, one query per latent frame, all 88 tokens), averaged over heads
    torch.Size([2, 3, 88])
    >>> reset_attention_kernel(transformer)

    ```
"""

from __future__ import annotations

import warnings

import torch
from diffusers.utils import logging

from ..families import get_family
from .capture import DEFAULT_CAPTURE_ELEMENTS, AttentionCapture, attention_facts, attention_rows, capture_attention
from .kernels import KERNELS, probe_xformers, resolve_kernel
from .processors import (
    RepVideoAttnProcessorMixin,
    attention_modules,
    check_no_diffusers_backend,
    install,
    uninstall_if_idle,
)

logger = logging.get_logger(__name__)

_KERNEL_ATTRIBUTE = "_repvideo_attention"
BACKENDS = ("auto", *KERNELS)  # the values `repvideo generate --attention` takes


def set_attention_kernel(transformer: torch.nn.Module, kernel: str = "auto") -> str:
    """Route the attention of a supported video transformer to xformers or PyTorch SDPA.

    Args:
        transformer: a transformer of a registered family whose attention facts are known.
        kernel: ``"auto"`` (xformers if a real call works on the model's device and dtype, else SDPA; the choice and
            the reason are logged), ``"xformers"`` (raise if it cannot run) or ``"sdpa"`` (diffusers' name
            ``"native"`` is accepted for it).

    Returns:
        The kernel actually used: ``"xformers"`` or ``"sdpa"``.

    Raises:
        `ValueError`: unknown kernel, unsupported model, a diffusers attention backend in the way, or ``"xformers"``
        that cannot run here. The model's processors are unchanged when it raises.

    Example:
        ```python
        >>> from repvideo_diffusers.attention import get_attention_kernel, reset_attention_kernel, set_attention_kernel
        >>> from repvideo_diffusers.tiny import build_tiny_transformer
        >>> transformer = build_tiny_transformer()
        >>> set_attention_kernel(transformer, "sdpa")
        'sdpa'
        >>> get_attention_kernel(transformer)
        'sdpa'
        >>> reset_attention_kernel(transformer)  # the stock processors again
        >>> get_attention_kernel(transformer) is None
        True

        ```
    """
    wanted = resolve_kernel(kernel)
    attention_facts(get_family(transformer))  # refuses a family whose attention the registry does not describe
    check_no_diffusers_backend(transformer, "set_attention_kernel")
    reference = next(transformer.parameters())
    device, dtype = reference.device, reference.dtype
    if wanted == "sdpa":
        chosen = "sdpa"
    else:
        problem = probe_xformers(device, dtype)
        if problem is None:
            chosen = "xformers"
        elif wanted == "xformers":
            raise ValueError(
                f"attention kernel 'xformers' was requested but cannot run: {problem}. Use 'sdpa', or 'auto' to "
                "fall back to SDPA; xformers needs a CUDA device (`pip install --no-deps xformers` matching your torch)."
            )
        else:
            chosen = "sdpa"
            logger.warning(f"attention kernel 'auto' chose sdpa: {problem}.")
    if chosen == "xformers" and wanted == "auto":
        logger.warning(f"attention kernel 'auto' chose xformers: it runs on {device} for {dtype}.")
    for processor in install(transformer).values():
        processor.kernel = chosen
    setattr(transformer, _KERNEL_ATTRIBUTE, chosen)
    return chosen


def get_attention_kernel(transformer: torch.nn.Module) -> str | None:
    """The kernel set by `set_attention_kernel` (``"xformers"`` / ``"sdpa"``), or ``None`` for the stock processors."""
    return getattr(transformer, _KERNEL_ATTRIBUTE, None)


def reset_attention_kernel(transformer: torch.nn.Module) -> None:
    """Put the stock processor objects back (an active `capture_attention` keeps its own until it exits).

    Does nothing if `set_attention_kernel` was not called.
    """
    if not hasattr(transformer, _KERNEL_ATTRIBUTE):
        return
    for _, module in attention_modules(transformer):
        if isinstance(module.processor, RepVideoAttnProcessorMixin):
            module.processor.kernel = None
    delattr(transformer, _KERNEL_ATTRIBUTE)
    uninstall_if_idle(transformer)


def _deprecated(old: str, new, replacement: str):
    def function(*args, **kwargs):
        warnings.warn(
            f"repvideo_diffusers.{old} is deprecated and will be removed in the next release: it is easily confused "
            f"with diffusers' `ModelMixin.{old}`, which takes other names. Use repvideo_diffusers.{replacement}.",
            FutureWarning,
            stacklevel=2,
        )
        return new(*args, **kwargs)

    function.__name__ = old
    function.__doc__ = f"Deprecated alias of `{replacement}`."
    return function


set_attention_backend = _deprecated("set_attention_backend", set_attention_kernel, "set_attention_kernel")
get_attention_backend = _deprecated("get_attention_backend", get_attention_kernel, "get_attention_kernel")
reset_attention_backend = _deprecated("reset_attention_backend", reset_attention_kernel, "reset_attention_kernel")

__all__ = [
    "BACKENDS",
    "DEFAULT_CAPTURE_ELEMENTS",
    "KERNELS",
    "AttentionCapture",
    "RepVideoAttnProcessorMixin",
    "attention_rows",
    "capture_attention",
    "get_attention_kernel",
    "probe_xformers",
    "reset_attention_kernel",
    "set_attention_kernel",
]

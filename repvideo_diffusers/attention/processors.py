"""RepVideo's attention processors: the stock diffusers processors, with their attention kernel routed.

Every supported family computes its attention with ``torch.nn.functional.scaled_dot_product_attention``: CogVideoX
and Mochi call it directly, Wan, HunyuanVideo and LTX-Video through diffusers' ``dispatch_attention_fn`` and its
``native`` backend. A processor installed here is a subclass of the stock class whose ``__call__`` runs the stock
``__call__`` inside a ``torch.overrides.TorchFunctionMode`` (a documented PyTorch extension point) that sees that one
call and sends it to the chosen kernel (`kernels.py`), recording attention rows on the way when a capture is active.
Projections, norms, rotary embeddings and masking stay diffusers' own code, so they cannot drift from the stock
maths, and the mode is traced by ``torch.compile(fullgraph=True)`` without a graph break.

How this relates to diffusers' ``ModelMixin.set_attention_backend("flash" | "native" | ...)``: that method picks the
kernel inside ``dispatch_attention_fn`` and so reaches only the families that dispatch (not CogVideoX or Mochi).
`set_attention_kernel` reaches every family, through the SDPA call. Use one or the other: with a diffusers backend
other than ``native`` set on a processor, the SDPA call never happens, so `set_attention_kernel` and
`capture_attention` refuse that model and name ``transformer.reset_attention_backend()``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .. import _compat
from ..families import registered_families
from .kernels import KERNEL_FUNCTIONS

_SDPA_PARAMETERS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")


class _RouteAttention(TorchFunctionMode):
    """Sends ``F.scaled_dot_product_attention`` calls made inside one processor call to the processor's kernel."""

    def __init__(self, processor: "RepVideoAttnProcessorMixin"):
        super().__init__()
        self.processor = processor

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            # Tensor methods written in Python that call `super()` cannot be traced by torch.compile from inside a
            # mode; their functional twins compute the same.
            if func is torch.Tensor.unflatten:
                return torch.unflatten(*args, **kwargs)
            return func(*args, **kwargs)
        call = dict(zip(_SDPA_PARAMETERS, args), **kwargs)
        processor = self.processor
        if processor.capture is not None:
            processor.record(call["query"], call["key"], call.get("attn_mask"), call.get("scale"))
        kernel = KERNEL_FUNCTIONS[processor.kernel] if processor.kernel is not None else func
        return kernel(**call)


class RepVideoAttnProcessorMixin:
    """Mixed into a subclass of each stock processor class; see the module docstring.

    Attributes:
        kernel: ``"sdpa"``, ``"xformers"`` or ``None`` (keep PyTorch's SDPA call as it is; capture only).
        capture / layer: the `AttentionCapture` recording this module's rows and its layer index, or ``None``.
        stock: the stock processor object this one replaced (put back by `reset_attention_kernel`).
    """

    kernel: str | None = None
    capture = None
    layer: int = -1
    stock = None
    _calls_in_forward = 0

    def record(self, query, key, attn_mask, scale):
        batch_index = self._calls_in_forward  # Mochi attends sample by sample: one call per sample
        self._calls_in_forward += 1
        self.capture.record(self.layer, query, key, attn_mask, scale, batch_index)


@functools.lru_cache(maxsize=None)
def routed_class(stock_class: type) -> type:
    """The RepVideo subclass of a stock processor class (made once per class)."""
    stock_call = stock_class.__call__

    def __call__(self, *args, **kwargs):
        self._calls_in_forward = 0
        if self.capture is None and self.kernel in (None, "sdpa"):
            return stock_call(self, *args, **kwargs)  # the stock SDPA call is the kernel asked for: nothing to route
        with _RouteAttention(self):
            return stock_call(self, *args, **kwargs)

    # diffusers' attention modules pass a processor only the keyword arguments its `__call__` signature names:
    # show them the stock signature.
    __call__.__signature__ = inspect.signature(stock_call)
    return type(f"RepVideo{stock_class.__name__}", (RepVideoAttnProcessorMixin, stock_class), {"__call__": __call__})


def known_processors() -> frozenset[str]:
    """Class names of every stock processor a registered family declares."""
    return frozenset(name for family in registered_families().values() if family.attention
                     for name in family.attention.processors)


def attention_modules(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of every attention module whose processor is a known stock one or one of ours."""
    known = known_processors()
    return [
        (name, module)
        for name, module in transformer.named_modules()
        if type(getattr(module, "processor", None)).__name__ in known
        or isinstance(getattr(module, "processor", None), RepVideoAttnProcessorMixin)
    ]


def check_no_diffusers_backend(transformer: torch.nn.Module, what: str) -> None:
    """Refuse a model whose processors use a diffusers attention backend that does not call PyTorch SDPA."""
    for name, module in attention_modules(transformer):
        backend = _compat.processor_attention_backend(module.processor)
        if backend not in (None, "native"):
            raise ValueError(
                f"{what} works through PyTorch's scaled_dot_product_attention, but {name} uses diffusers' attention "
                f"backend {backend!r} (set with `transformer.set_attention_backend`), which never calls it. Call "
                "`transformer.reset_attention_backend()` first, or keep diffusers' backend and skip this."
            )


def install(transformer: torch.nn.Module) -> dict[str, RepVideoAttnProcessorMixin]:
    """Our processor on every known attention module (idempotent); returns them by module name."""
    installed = {}
    for name, module in attention_modules(transformer):
        processor = module.processor
        if not isinstance(processor, RepVideoAttnProcessorMixin):
            cls = routed_class(type(processor))
            routed = cls.__new__(cls)
            routed.__dict__.update(processor.__dict__)  # e.g. diffusers' _attention_backend, _parallel_config
            routed.stock = processor
            module.processor = routed
            processor = routed
        installed[name] = processor
    if not installed:
        raise ValueError(
            f"{type(transformer).__name__} has no attention processor repvideo-diffusers knows "
            f"(known: {', '.join(sorted(known_processors()))}). Custom processors set with `set_attn_processor` must "
            "be removed first (`transformer.set_default_attn_processor()` or reload the model)."
        )
    return installed


def uninstall_if_idle(transformer: torch.nn.Module) -> None:
    """Put the stock processor objects back wherever ours has neither a kernel nor a capture to serve."""
    for _, module in attention_modules(transformer):
        processor = module.processor
        if isinstance(processor, RepVideoAttnProcessorMixin) and processor.kernel is None and processor.capture is None:
            module.processor = processor.stock


def processors(transformer: torch.nn.Module) -> dict[str, Callable]:
    """The processor of every known attention module, by module name (ours or stock)."""
    return {name: module.processor for name, module in attention_modules(transformer)}

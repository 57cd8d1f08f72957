"""Fused attention processors (xformers or PyTorch SDPA) and attention capture without an N x N map.

RepVideo's models run one joint text-video attention per block over long sequences (17,776 tokens for
CogVideoX-2B at 49 frames). Two things plain diffusers does not give:

* **A fused kernel for every supported family.** CogVideoX and Mochi processors call
  ``F.scaled_dot_product_attention`` directly, so ``ModelMixin.set_attention_backend`` does not reach them;
  Wan, HunyuanVideo and LTX-Video go through diffusers' ``dispatch_attention_fn``, whose backends (``native``,
  ``xformers``) we reuse instead of duplicating them.
* **Attention capture.** The paper compares attention maps across layers. A full map is N x N per head
  (1.2 GB per head at 17,776 tokens in fp32); we only record the rows of a few chosen query tokens (one per
  latent frame by default), averaged over heads, computed a few heads at a time: O(queries x tokens) memory.

How the processors work: each installed processor is a subclass of the stock one whose ``__call__`` runs the
*stock code object itself*, with its one attention call (``F.scaled_dot_product_attention`` or
``dispatch_attention_fn``) resolved to ours. The projections, norms, rotary embeddings and masking therefore
stay exactly diffusers' own, so they cannot drift from the stock math; only the kernel (and the capture) change.
Removing them (`reset_attention_backend`) puts the very same stock processor objects back.

Example:
    ```python
    >>> from repvideo_diffusers import attention
    >>> from repvideo_diffusers.testing import TINY_MODELS
    >>> transformer, inputs = TINY_MODELS["CogVideoX"].build()
    >>> attention.set_attention_backend(transformer, "auto")  # xformers where it runs, else SDPA
    'sdpa'
    >>> with attention.capture_attention(transformer) as capture:
    ...     _ = transformer(**inputs)
    >>> capture.maps[0].shape  # (batch, one query per latent frame, all 88 tokens), averaged over heads
    torch.Size([2, 3, 88])
    >>> attention.reset_attention_backend(transformer)
    ```
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import math
import sys
import types
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from diffusers.utils import logging

from .repvideo import get_model_spec, get_transformer_blocks

logger = logging.get_logger(__name__)

BACKENDS = ("auto", "xformers", "sdpa")
_ATTRIBUTE = "_repvideo_attention"
# diffusers' backend names for the families that already dispatch (AttentionBackendName values).
_DISPATCH_NAMES = {"sdpa": "native", "xformers": "xformers"}
# Elements of float32 scores one capture chunk may hold (16 MB); a chunk never holds fewer than one head's rows.
DEFAULT_CAPTURE_ELEMENTS = 1 << 22


# ----------------------------------------------------------------------------------------------------------------
# Per-family facts: one table.
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionSpec:
    """What capture needs to know about one family's attention.

    Args:
        captured: name of the attention module in each block whose map is recorded (the self/joint attention).
        text_first: whether text tokens come before video tokens in that attention's key sequence.
        drops_padding: whether the stock processor drops padded text tokens sample by sample (Mochi): the
            recorded rows are padded back to video + text tokens so every sample has the same key axis.
        grid: ``(transformer, forward args, forward kwargs) -> (t, h, w)``, the video token grid of a forward call.
    """

    captured: str
    text_first: bool
    grid: Callable[[torch.nn.Module, tuple, dict], tuple[int, int, int]]
    drops_padding: bool = False


def _input(args, kwargs, name="hidden_states"):
    return kwargs[name] if name in kwargs else args[0]


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _grid_cogvideox(transformer, args, kwargs):
    frames, _, height, width = _input(args, kwargs).shape[1:]  # (B, F, C, H, W)
    p, pt = transformer.config.patch_size, transformer.config.patch_size_t or 1
    return math.ceil(frames / pt), height // p, width // p


def _grid_channels_first(transformer, args, kwargs):
    frames, height, width = _input(args, kwargs).shape[2:]  # (B, C, F, H, W)
    patch = transformer.config.patch_size
    if isinstance(patch, (tuple, list)) and len(patch) == 3:  # Wan: (t, h, w)
        pt, ph, pw = patch
    else:
        pt, (ph, pw) = getattr(transformer.config, "patch_size_t", None) or 1, _pair(patch)
    return frames // pt, height // ph, width // pw


def _grid_ltx(transformer, args, kwargs):
    config = transformer.config
    return (
        kwargs["num_frames"] // (config.patch_size_t or 1),
        kwargs["height"] // config.patch_size,
        kwargs["width"] // config.patch_size,
    )


ATTENTION_SPECS: dict[str, AttentionSpec] = {
    "CogVideoX": AttentionSpec("attn1", text_first=True, grid=_grid_cogvideox),
    "Wan": AttentionSpec("attn1", text_first=False, grid=_grid_channels_first),
    "HunyuanVideo": AttentionSpec("attn", text_first=False, grid=_grid_channels_first),
    "LTX-Video": AttentionSpec("attn1", text_first=False, grid=_grid_ltx),
    "Mochi": AttentionSpec("attn1", text_first=False, grid=_grid_channels_first, drops_padding=True),
}

# Stock processor classes and the attention call in their code: "sdpa" (F.scaled_dot_product_attention, layout
# batch x heads x tokens x dim) or "dispatch" (diffusers' dispatch_attention_fn, batch x tokens x heads x dim).
STOCK_PROCESSORS: dict[str, str] = {
    "CogVideoXAttnProcessor2_0": "sdpa",
    "MochiAttnProcessor2_0": "sdpa",
    "AttnProcessor2_0": "sdpa",  # HunyuanVideo's token refiner
    "WanAttnProcessor": "dispatch",
    "HunyuanVideoAttnProcessor2_0": "dispatch",
    "LTXVideoAttnProcessor": "dispatch",
}


# ----------------------------------------------------------------------------------------------------------------
# Kernels and the xformers probe.
# ----------------------------------------------------------------------------------------------------------------


def _xformers_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **_):
    """xformers memory-efficient attention with SDPA's (batch, heads, tokens, dim) layout and arguments."""
    import xformers.ops

    if dropout_p or is_causal:
        raise ValueError("the xformers route supports neither dropout nor causal masks (stock processors use none).")
    bias = None
    if attn_mask is not None:
        bias = attn_mask
        if bias.dtype == torch.bool:
            bias = torch.zeros(bias.shape, dtype=query.dtype, device=query.device).masked_fill(~bias, float("-inf"))
        bias = bias.to(query.dtype).expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    out = xformers.ops.memory_efficient_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_bias=bias, scale=scale
    )
    return out.transpose(1, 2)


def probe_xformers(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> str | None:
    """Run one small xformers attention on ``device``; return ``None`` if it works, else why it does not.

    Importing xformers proves nothing: 0.0.35 installs on a CPU-only machine but has no CPU operator.

    Example:
        ```python
        >>> from repvideo_diffusers.attention import probe_xformers
        >>> probe_xformers("cpu") is not None  # no xformers operator runs on a CPU
        True
        ```
    """
    try:
        import xformers.ops
    except Exception as error:  # ImportError, or a broken build raising anything at import
        return f"xformers cannot be imported ({type(error).__name__}: {error})"
    try:
        q = torch.randn(1, 16, 2, 64, device=device, dtype=dtype)
        out = xformers.ops.memory_efficient_attention(q, q, q)
        if out.shape != q.shape or not torch.isfinite(out).all():
            return f"xformers returned a wrong result on {device} ({tuple(out.shape)}, finite={bool(torch.isfinite(out).all())})"
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"xformers has no working operator on {device} for {dtype} ({type(error).__name__}: {first_line})"
    return None


# ----------------------------------------------------------------------------------------------------------------
# Attention capture.
# ----------------------------------------------------------------------------------------------------------------


def attention_rows(
    query: torch.Tensor,
    key: torch.Tensor,
    indices: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    scale: float | None = None,
    max_elements: int = DEFAULT_CAPTURE_ELEMENTS,
) -> torch.Tensor:
    """Softmax attention of the query tokens at ``indices`` over all keys, averaged over heads.

    ``query`` and ``key`` are (batch, heads, tokens, dim). Only the chosen rows are computed, a few heads at a
    time, so the largest tensor is about ``max(max_elements, queries x tokens)`` elements, never tokens x tokens.

    Returns:
        float32 tensor (batch, len(indices), key tokens).

    Example:
        ```python
        >>> import torch
        >>> from repvideo_diffusers.attention import attention_rows
        >>> q = k = torch.randn(1, 2, 100, 8)
        >>> attention_rows(q, k, torch.tensor([0, 50])).sum(-1)  # rows of a softmax
        tensor([[1.0000, 1.0000]])
        ```
    """
    batch, heads, _, dim = query.shape
    tokens = key.shape[2]
    scale = dim**-0.5 if scale is None else scale
    indices = indices.to(query.device)
    rows = len(indices)
    heads_per_chunk = max(1, min(heads, max_elements // max(1, rows * tokens)))
    out = torch.zeros(batch, rows, tokens, dtype=torch.float32, device=query.device)
    for b in range(batch):
        mask = None
        if attn_mask is not None:
            mask = attn_mask[b if attn_mask.shape[0] > 1 else 0]
            mask = mask if mask.dim() == 3 else mask.view(1, *([1] * (3 - mask.dim())), tokens)
            if mask.shape[-2] > 1:
                mask = mask.index_select(-2, indices)
        for start in range(0, heads, heads_per_chunk):
            q = query[b, start : start + heads_per_chunk].index_select(1, indices).float()
            scores = torch.matmul(q, key[b, start : start + heads_per_chunk].float().transpose(-1, -2)) * scale
            if mask is not None:
                m = mask[start : start + heads_per_chunk] if mask.shape[0] > 1 else mask
                scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.float()
            out[b] += scores.softmax(dim=-1).sum(dim=0)
            del scores
    return out.div_(heads)


@dataclass
class AttentionCapture:
    """Attention rows recorded by `capture_attention` during one or more transformer forward calls.

    Attributes:
        layers: names of the captured attention modules, in execution order.
        maps: per layer, float32 (batch, queries, key tokens): the latest forward call's attention of the chosen
            query tokens, averaged over heads.
        query_tokens: indices of the chosen query tokens in the key sequence.
        grid: video token grid (t, h, w) of the latest forward call.
        calls: number of transformer forward calls captured so far.
    """

    layers: list[str]
    queries: str | Sequence[int] = "frames"
    max_elements: int = DEFAULT_CAPTURE_ELEMENTS
    maps: list[torch.Tensor | None] = field(default_factory=list)
    query_tokens: torch.Tensor | None = None
    grid: tuple[int, int, int] | None = None
    calls: int = 0
    text_first: bool = False

    def _select(self, tokens: int) -> torch.Tensor:
        if self.queries != "frames":
            indices = torch.as_tensor(list(self.queries), dtype=torch.long)
            if len(indices) == 0 or indices.min() < 0 or indices.max() >= tokens:
                raise ValueError(
                    f"capture_attention(queries=...) must be token indices in [0, {tokens}), got {self.queries!r}."
                )
            return indices
        t, h, w = self.grid
        offset = tokens - t * h * w if self.text_first else 0
        # One query per latent frame: the token at the centre of the frame.
        return torch.tensor([offset + frame * h * w + (h // 2) * w + w // 2 for frame in range(t)])

    def record(self, layout: str, layer: int, query, key, attn_mask, scale, batch_index: int | None = None):
        query, key = query.detach(), key.detach()  # a diagnostic: never part of any autograd graph
        if layout == "BNHD":
            query, key = query.transpose(1, 2), key.transpose(1, 2)
        tokens = key.shape[2]
        if self.query_tokens is None:
            self.query_tokens = self._select(tokens)
        rows = attention_rows(query, key, self.query_tokens, attn_mask, scale, self.max_elements).cpu()
        full = self._full_tokens or tokens
        if rows.shape[-1] < full:  # Mochi drops padded text tokens per sample: pad them back as zero attention
            rows = F.pad(rows, (0, full - rows.shape[-1]))
        current = self.maps[layer]
        # Mochi attends sample by sample: rows of one forward call arrive one sample at a time.
        self.maps[layer] = rows if current is None or batch_index in (None, 0) else torch.cat([current, rows])

    _full_tokens: int | None = None


# ----------------------------------------------------------------------------------------------------------------
# The processors.
# ----------------------------------------------------------------------------------------------------------------

_CURRENT: contextvars.ContextVar = contextvars.ContextVar("repvideo_attention_processor")


def _routed_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    processor = _CURRENT.get()
    processor._maybe_record(query, key, attn_mask, scale, "BHND")
    if processor.kernel == "xformers":
        return _xformers_attention(query, key, value, attn_mask, dropout_p, is_causal, scale)
    kwargs = {"enable_gqa": True} if enable_gqa else {}
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs
    )


def _routed_dispatch(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, *args, **kwargs):
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    processor = _CURRENT.get()
    processor._maybe_record(query, key, attn_mask, scale, "BNHD")
    if processor.kernel is not None:
        kwargs["backend"] = _DISPATCH_NAMES[processor.kernel]
    return dispatch_attention_fn(query, key, value, attn_mask, dropout_p, is_causal, scale, *args, **kwargs)


class _RoutedFunctional(types.ModuleType):
    """``torch.nn.functional`` as the stock code sees it, with ``scaled_dot_product_attention`` routed to us."""

    scaled_dot_product_attention = staticmethod(_routed_sdpa)

    def __getattr__(self, name):
        return getattr(F, name)


_ROUTED_F = _RoutedFunctional("torch.nn.functional")


class RepVideoAttnProcessorMixin:
    """Mixed into a subclass of each stock processor class; see the module docstring.

    Attributes:
        kernel: ``"sdpa"``, ``"xformers"`` or ``None`` (keep the stock kernel; capture only).
        capture / layer: the `AttentionCapture` recording this module's rows and its layer index, or ``None``.
        stock: the stock processor object this one replaced (restored by `reset_attention_backend`).
    """

    kernel: str | None = None
    capture: AttentionCapture | None = None
    layer: int = -1
    stock = None
    _stock_call: Callable = None
    _calls_in_forward = 0

    def _maybe_record(self, query, key, attn_mask, scale, layout):
        if self.capture is None:
            return
        batch_index = self._calls_in_forward
        self._calls_in_forward += 1
        self.capture.record(layout, self.layer, query, key, attn_mask, scale, batch_index)


@functools.lru_cache(maxsize=None)
def _routed_class(stock_class: type) -> type:
    function = stock_class.__call__
    module = sys.modules[function.__module__]
    namespace = dict(vars(module))
    namespace.update({"F": _ROUTED_F, "dispatch_attention_fn": _routed_dispatch})
    stock_call = types.FunctionType(
        function.__code__, namespace, function.__name__, function.__defaults__, function.__closure__
    )
    stock_call.__kwdefaults__ = function.__kwdefaults__

    def __call__(self, *args, **kwargs):
        token = _CURRENT.set(self)
        self._calls_in_forward = 0
        try:
            return stock_call(self, *args, **kwargs)
        finally:
            _CURRENT.reset(token)

    # diffusers' Attention.forward keeps only the kwargs the processor's signature names: show it the stock one.
    __call__.__signature__ = inspect.signature(function)
    return type(f"RepVideo{stock_class.__name__}", (RepVideoAttnProcessorMixin, stock_class), {"__call__": __call__})


def _attention_modules(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [
        (name, module)
        for name, module in transformer.named_modules()
        if type(getattr(module, "processor", None)).__name__ in STOCK_PROCESSORS
        or isinstance(getattr(module, "processor", None), RepVideoAttnProcessorMixin)
    ]


def _install(transformer: torch.nn.Module) -> dict[str, RepVideoAttnProcessorMixin]:
    """Our processor on every known attention module (idempotent); returns them by module name."""
    installed = {}
    for name, module in _attention_modules(transformer):
        processor = module.processor
        if not isinstance(processor, RepVideoAttnProcessorMixin):
            routed = _routed_class(type(processor)).__new__(_routed_class(type(processor)))
            routed.__dict__.update(processor.__dict__)  # e.g. diffusers' _attention_backend, _parallel_config
            routed.stock = processor
            module.processor = routed
            processor = routed
        installed[name] = processor
    if not installed:
        raise ValueError(
            f"{type(transformer).__name__} has no attention processor repvideo-diffusers knows "
            f"(known: {', '.join(STOCK_PROCESSORS)}). Custom processors set with `set_attn_processor` must be "
            "removed first (`transformer.set_default_attn_processor()` or reload the model)."
        )
    return installed


def _uninstall_if_idle(transformer: torch.nn.Module) -> None:
    for _, module in _attention_modules(transformer):
        processor = module.processor
        if isinstance(processor, RepVideoAttnProcessorMixin) and processor.kernel is None and processor.capture is None:
            module.processor = processor.stock


def set_attention_backend(transformer: torch.nn.Module, backend: str = "auto") -> str:
    """Route the attention of a supported video transformer to xformers or PyTorch SDPA.

    Args:
        transformer: a supported diffusers video transformer (CogVideoX, Wan, HunyuanVideo, LTX-Video, Mochi).
        backend: ``"auto"`` (xformers if a real call works on the model's device and dtype, else SDPA; the choice
            and the reason are logged), ``"xformers"`` (raise if it cannot run) or ``"sdpa"``.

    Returns:
        The backend actually used: ``"xformers"`` or ``"sdpa"``.

    Raises:
        `ValueError`: unknown backend, unsupported model, or ``"xformers"`` that cannot run here. The model's
        processors are unchanged when it raises.

    Example:
        ```python
        >>> from repvideo_diffusers import attention
        >>> from repvideo_diffusers.tiny import build_tiny_transformer
        >>> transformer = build_tiny_transformer()
        >>> attention.set_attention_backend(transformer, "sdpa")
        'sdpa'
        >>> attention.get_attention_backend(transformer)
        'sdpa'
        >>> attention.reset_attention_backend(transformer)  # the stock processors again
        >>> attention.get_attention_backend(transformer) is None
        True
        ```
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    get_model_spec(transformer)
    reference = next(transformer.parameters())
    device, dtype = reference.device, reference.dtype
    if backend == "sdpa":
        chosen = "sdpa"
    else:
        problem = probe_xformers(device, dtype)
        if problem is None:
            chosen = "xformers"
        elif backend == "xformers":
            raise ValueError(
                f"attention backend 'xformers' was requested but cannot run: {problem}. Use 'sdpa', or 'auto' to "
                "fall back to SDPA; xformers needs a CUDA device (`pip install --no-deps xformers` matching your torch)."
            )
        else:
            chosen = "sdpa"
            logger.warning(f"attention backend 'auto' chose sdpa: {problem}.")
    if chosen == "xformers" and backend == "auto":
        logger.warning(f"attention backend 'auto' chose xformers: it runs on {device} for {dtype}.")
    for processor in _install(transformer).values():
        processor.kernel = chosen
    setattr(transformer, _ATTRIBUTE, chosen)
    return chosen


def get_attention_backend(transformer: torch.nn.Module) -> str | None:
    """The backend set by `set_attention_backend` (``"xformers"`` / ``"sdpa"``), or ``None`` for stock."""
    return getattr(transformer, _ATTRIBUTE, None)


def reset_attention_backend(transformer: torch.nn.Module) -> None:
    """Put the stock processor objects back (an active `capture_attention` keeps its own until it exits).

    Does nothing if `set_attention_backend` was not called.
    """
    if not hasattr(transformer, _ATTRIBUTE):
        return
    for _, module in _attention_modules(transformer):
        if isinstance(module.processor, RepVideoAttnProcessorMixin):
            module.processor.kernel = None
    delattr(transformer, _ATTRIBUTE)
    _uninstall_if_idle(transformer)


def captured_attention_modules(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of the self/joint attention of every block, in execution order (one map per block)."""
    spec = ATTENTION_SPECS[get_model_spec(transformer).family]
    names = {id(module): name for name, module in transformer.named_modules()}
    modules = [getattr(block, spec.captured) for block in get_transformer_blocks(transformer)]
    return [(names[id(module)], module) for module in modules]


@contextlib.contextmanager
def capture_attention(
    transformer: torch.nn.Module,
    queries: str | Sequence[int] = "frames",
    max_elements: int = DEFAULT_CAPTURE_ELEMENTS,
) -> Iterator[AttentionCapture]:
    """Record, per block, the attention of a few query tokens over all tokens, averaged over heads.

    Args:
        transformer: a supported video transformer; works with any backend set by `set_attention_backend`.
        queries: ``"frames"`` (one query per latent frame: the centre token of each frame) or token indices in
            the captured attention's key sequence (text tokens first for CogVideoX, video first otherwise).
        max_elements: float32 elements a capture chunk may hold; chunks never go below one head's rows.

    Yields:
        `AttentionCapture`, whose ``maps`` hold the latest forward call's rows, one tensor per block.

    Example:
        ```python
        >>> from repvideo_diffusers.attention import capture_attention
        >>> from repvideo_diffusers.testing import TINY_MODELS
        >>> transformer, inputs = TINY_MODELS["Wan"].build()
        >>> with capture_attention(transformer) as capture:
        ...     _ = transformer(**inputs)
        >>> [tuple(m.shape) for m in capture.maps][:1]  # Wan's self-attention holds video tokens only
        [(2, 3, 48)]
        ```
    """
    spec = ATTENTION_SPECS[get_model_spec(transformer).family]
    if getattr(transformer, "_repvideo_capture", None) is not None:
        raise ValueError("capture_attention is already active on this transformer; nest no second capture.")
    targets = captured_attention_modules(transformer)
    capture = AttentionCapture(layers=[name for name, _ in targets], queries=queries, max_elements=max_elements)
    capture.text_first = spec.text_first
    capture.maps = [None] * len(targets)
    installed = _install(transformer)
    by_name = {name: installed[name] for name, _ in targets if name in installed}
    if len(by_name) != len(targets):
        _uninstall_if_idle(transformer)
        missing = sorted(set(capture.layers) - set(by_name))
        raise ValueError(f"cannot capture attention of {missing[:3]}: their processors are not stock diffusers ones.")

    def start(module, args, kwargs):
        capture.grid = spec.grid(transformer, args, kwargs)
        capture.query_tokens = None  # the sequence may change between calls
        t, h, w = capture.grid
        capture._full_tokens = t * h * w + _input(args, kwargs, "encoder_hidden_states").shape[1] if spec.drops_padding else None
        capture.maps = [None] * len(targets)

    for layer, name in enumerate(capture.layers):
        by_name[name].capture, by_name[name].layer = capture, layer
    handle = transformer.register_forward_pre_hook(start, with_kwargs=True)
    done = transformer.register_forward_hook(lambda *a: setattr(capture, "calls", capture.calls + 1))
    transformer._repvideo_capture = capture
    try:
        yield capture
    finally:
        handle.remove()
        done.remove()
        del transformer._repvideo_capture
        for processor in by_name.values():
            processor.capture = None
        _uninstall_if_idle(transformer)

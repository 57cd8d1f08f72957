"""Attention capture without an N x N map: the rows of a few query tokens, averaged over heads.

The paper compares attention maps across layers. A full map is N x N per head (1.2 GB per head at CogVideoX-2B's
17,776 tokens in fp32); `capture_attention` records only the rows of a few chosen query tokens (one per latent frame
by default), computed a few heads at a time: O(queries x tokens) memory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..families import AttentionFacts, Family, get_family
from .processors import check_no_diffusers_backend, install, uninstall_if_idle

# Elements of float32 scores one capture chunk may hold (16 MB); a chunk never holds fewer than one head's rows.
DEFAULT_CAPTURE_ELEMENTS = 1 << 22
_CAPTURE_ATTRIBUTE = "_repvideo_capture"


def attention_facts(family: Family) -> AttentionFacts:
    if family.attention is None:
        raise ValueError(
            f"The {family.name} family declares no attention facts (`Family.attention`), so its attention can be "
            "neither routed nor captured: its processors do not compute softmax attention through PyTorch SDPA "
            "(see its module in repvideo_diffusers/families/). Use the model's stock attention."
        )
    return family.attention


def _input(args, kwargs, name="hidden_states"):
    return kwargs[name] if name in kwargs else args[0]


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
        >>> q = k = torch.randn(1, 2, 100, 8, generator=torch.Generator().manual_seed(0))
        >>> rows = attention_rows(q, k, torch.tensor([0, 50]))
        >>> rows.shape, bool(torch.allclose(rows.sum(-1), torch.ones(1, 2)))  # rows of a softmax
        (torch.Size([1, 2, 100]), True)
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

    def record(self, layer: int, query, key, attn_mask, scale, batch_index: int | None = None):
        """Record one SDPA call's rows: ``query`` and ``key`` in (batch, heads, tokens, dim)."""
        query, key = query.detach(), key.detach()  # a diagnostic: never part of any autograd graph
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


def captured_attention_modules(transformer: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of the self/joint attention of every block, in execution order (one map per block)."""
    family = get_family(transformer)
    facts = attention_facts(family)
    names = {id(module): name for name, module in transformer.named_modules()}
    modules = [block.get_submodule(facts.captured) for block in family.transformer_blocks(transformer)]
    return [(names[id(module)], module) for module in modules]


@contextlib.contextmanager
def capture_attention(
    transformer: torch.nn.Module,
    queries: str | Sequence[int] = "frames",
    max_elements: int = DEFAULT_CAPTURE_ELEMENTS,
) -> Iterator[AttentionCapture]:
    """Record, per block, the attention of a few query tokens over all tokens, averaged over heads.

    Args:
        transformer: a supported video transformer; works with any kernel set by `set_attention_kernel`.
        queries: ``"frames"`` (one query per latent frame: the centre token of each frame) or token indices in
            the captured attention's key sequence (text tokens first for CogVideoX, video first otherwise).
        max_elements: float32 elements a capture chunk may hold; chunks never go below one head's rows.

    Yields:
        `AttentionCapture`, whose ``maps`` hold the latest forward call's rows, one tensor per block.

    Example:
        ```python
        >>> from repvideo_diffusers.attention import capture_attention
        >>> from repvideo_diffusers.families import get_family_by_name
        >>> transformer, inputs = get_family_by_name("Wan").tiny.build()
        >>> with capture_attention(transformer) as capture:
        ...     _ = transformer(**inputs)
        >>> [tuple(m.shape) for m in capture.maps][:1]  # Wan's self-attention holds video tokens only
        [(2, 3, 48)]
        ```
    """
    facts = attention_facts(get_family(transformer))
    if getattr(transformer, _CAPTURE_ATTRIBUTE, None) is not None:
        raise ValueError("capture_attention is already active on this transformer; nest no second capture.")
    targets = captured_attention_modules(transformer)
    capture = AttentionCapture(layers=[name for name, _ in targets], queries=queries, max_elements=max_elements)
    capture.text_first = facts.text_first
    capture.maps = [None] * len(targets)
    check_no_diffusers_backend(transformer, "capture_attention")
    installed = install(transformer)
    by_name = {name: installed[name] for name, _ in targets if name in installed}
    if len(by_name) != len(targets):
        uninstall_if_idle(transformer)
        missing = sorted(set(capture.layers) - set(by_name))
        raise ValueError(f"cannot capture attention of {missing[:3]}: their processors are not stock diffusers ones.")

    def start(module, args, kwargs):
        capture.grid = facts.grid(transformer, args, kwargs)
        capture.query_tokens = None  # the sequence may change between calls
        t, h, w = capture.grid
        capture._full_tokens = t * h * w + _input(args, kwargs, "encoder_hidden_states").shape[1] if facts.drops_padding else None
        capture.maps = [None] * len(targets)

    for layer, name in enumerate(capture.layers):
        by_name[name].capture, by_name[name].layer = capture, layer
    handle = transformer.register_forward_pre_hook(start, with_kwargs=True)
    done = transformer.register_forward_hook(lambda *a: setattr(capture, "calls", capture.calls + 1))
    setattr(transformer, _CAPTURE_ATTRIBUTE, capture)
    try:
        yield capture
    finally:
        handle.remove()
        done.remove()
        delattr(transformer, _CAPTURE_ATTRIBUTE)
        for processor in by_name.values():
            processor.capture = None
        uninstall_if_idle(transformer)

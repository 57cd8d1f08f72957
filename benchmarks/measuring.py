"""How `bench_repvideo.py` measures: peak memory (CUDA allocator, or live tensor storages on a CPU), allocation
counts, best-of timing, and the cost of the RepVideo hook's own work at one block.

Peak memory on CPU: a ``TorchDispatchMode`` adds up the bytes of every storage created during the call and
subtracts them when the storage is freed (``tracemalloc`` and RSS do not see torch's allocator reliably). The mode
is a private torch API (``torch.utils._python_dispatch``); the package may not use it outside its ``_compat``, but
this folder is not the package.
"""

from __future__ import annotations

import time
import weakref
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from official_style import apply_official_style
from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo
from repvideo_diffusers.core.hooks import _STATE_ATTRIBUTE
from repvideo_diffusers.families import get_transformer_blocks


class LiveStorageBytes:
    """Peak bytes of tensor storages created while active (CPU stand-in for ``torch.cuda.max_memory_allocated``)."""

    def __init__(self):
        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for tensor in tree_flatten(out)[0]:
                    if isinstance(tensor, torch.Tensor):
                        tracker._track(tensor.untyped_storage())
                return out

        self._mode = _Mode()
        self.live: dict[int, int] = {}
        self.current = self.peak = self.allocations = 0

    def _track(self, storage):
        key = storage.data_ptr()
        if key and key not in self.live:
            self.live[key] = storage.nbytes()
            self.allocations += 1
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)

    def _free(self, key):
        self.current -= self.live.pop(key, 0)

    def __enter__(self):
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self._mode.__exit__(*exc)


def synchronize(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_allocations(step: Callable[[], Any]) -> int:
    """How many tensor storages one call creates (every op's fresh output; in-place ops create none)."""
    with LiveStorageBytes() as tracker:
        step()
    return tracker.allocations


def peak_bytes(step: Callable[[], Any], device: torch.device) -> int:
    """Peak memory allocated during one call, over what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - baseline
    with LiveStorageBytes() as tracker:
        step()
    return tracker.peak


def best_time(function: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Minimum wall time of ``repeats`` calls after one untimed call."""
    function()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        function()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def attach(variant: str, transformer, window: int, gate_init: float):
    """Put ``variant`` (``vanilla``: nothing, ``repvideo``, ``official``) on the transformer; returns its gates."""
    config = RepVideoConfig(window=window, gate_init=gate_init)
    if variant == "repvideo":
        return apply_repvideo(transformer, config)
    if variant == "official":
        return apply_official_style(transformer, config)
    return None


def _block_inputs(transformer, inputs, block) -> tuple[tuple, dict]:
    """The positional and keyword arguments ``block`` receives in one forward call of the transformer."""
    captured = {}
    handle = block.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(args=args, kwargs=kwargs), with_kwargs=True
    )
    with torch.inference_mode():
        transformer(**inputs, return_dict=False)
    handle.remove()
    return captured["args"], captured["kwargs"]


def _hook_seconds(variant: str, hook, args, kwargs, window: int, device: torch.device) -> float:
    """One timed blend + cache update of ``hook`` with the cache as it stands mid-window."""
    # The package's block hook keeps the cache in its shared state: a running mean of our own (`repvideo`) or a list
    # (`official`); set up here directly, since no public call puts a cache mid-window.
    state = hook.state
    streams = tuple(hook._get(args, kwargs, i) for i in range(len(hook.argument_names)))
    cached = max(2, window // 2)
    state.start()
    state.count = cached
    if variant == "repvideo":
        state.means, state.owned = tuple(s.clone() for s in streams), True
    else:
        state.means = [tuple(s.clone() for s in streams) for _ in range(cached)]
    fresh = tuple(s.clone() for s in streams)  # the block's input, as a tensor the hook may blend in place
    new_args, new_kwargs = args, kwargs
    for position, stream in enumerate(fresh):
        new_args, new_kwargs = hook._set(new_args, new_kwargs, position, stream)
    synchronize(device)
    started = time.perf_counter()
    hook.blend_inputs(new_args, new_kwargs)
    hook.update_cache(streams if hook.output_indices is not None else streams[0])
    synchronize(device)
    return time.perf_counter() - started


def per_block_cost(transformer, inputs, device, window, gate_init, repeats: int = 30) -> dict:
    """Best-of time of the hook's own work at one block (blend + cache update), as a fraction of that block's forward.

    Short calls timed many times and the minimum kept: unlike whole-forward ratios this stays readable on a machine
    shared with other jobs. Measured at the middle of a cache window (the cache holds ``window // 2`` outputs).
    """
    blocks = get_transformer_blocks(transformer)
    index = min(len(blocks) - 1, window // 2 + 1) if window > 2 else len(blocks) - 1
    block = blocks[index]
    args, kwargs = _block_inputs(transformer, inputs, block)
    with torch.inference_mode():
        block_seconds = best_time(lambda: block(*args, **kwargs), device, max(3, repeats // 3))
    costs = {}
    for variant in ("repvideo", "official"):
        attach(variant, transformer, window, gate_init)
        hook = getattr(transformer, _STATE_ATTRIBUTE).hooks[id(block)]
        with torch.inference_mode():
            _hook_seconds(variant, hook, args, kwargs, window, device)
            best = min(_hook_seconds(variant, hook, args, kwargs, window, device) for _ in range(repeats))
        hook.state.stop()
        remove_repvideo(transformer)
        costs[variant] = {"hook_seconds": best, "fraction_of_block": best / block_seconds}
    return {"block_index": index, "block_seconds": block_seconds, **costs}

"""RepVideo: a cross-layer feature cache with learned gates for video diffusion transformers.

Paper: "RepVideo: Rethinking Cross-Layer Representation for Video Generation", Si et al., arXiv 2501.08994.

Before every transformer block ``i`` the stream ``h`` entering it is blended with the mean of a *feature cache*
that holds the outputs of the preceding blocks of the current *window*::

    h <- g[i] * mean(cache) + (1 - g[i]) * h        # one learned scalar gate per block
    h  = block_i(h)
    cache = [h] if i % window == 0 else cache + [h]

The whole technique lives in this module: one shared per-forward state, a hook per block (diffusers
``ModelHook``), a wrapper around gradient checkpointing, and ``apply_repvideo`` / ``remove_repvideo``. Which blocks
run in which order and where the streams sit in each block's arguments and outputs come from the family registry
(`repvideo_diffusers.families`); this module names no model.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.utils import logging

from .. import _compat
from ..families import BlockList, get_family, get_transformer_blocks, stream_positions
from ._deprecated import SUPPORTED_MODELS, ModelSpec, get_model_spec  # noqa: F401  (old names, still importable here)
from .config import RepVideoConfig
from .gates import RepVideoGates, gate_dtype, resolve_gates


logger = logging.get_logger(__name__)

_BLOCK_HOOK = "repvideo_block"
_GATES_ATTRIBUTE = "repvideo_gates"
_STATE_ATTRIBUTE = "_repvideo_state"


class _RepVideoState:
    """The feature cache of one transformer forward call.

    The cache is held as a running mean per stream (`means`) plus the number of tensors it aggregates (`count`):
    the same numbers as re-stacking the cached tensors, with O(1) work per block and one resident tensor per stream.
    """

    def __init__(self):
        self.active = False
        self.context: dict = {}
        self.in_place = True  # False while a step cache (diffusers', cache-dit's) may hold block outputs
        self.reset()

    def reset(self):
        self.means: tuple[torch.Tensor, ...] | None = None
        self.sources: tuple[torch.Tensor, ...] | None = None  # the block outputs the cache was last reset to
        self.count = 0
        # False while `means` still aliases a block output that flows on to the next block: it must not be
        # updated in place until it has been replaced by a tensor of our own.
        self.owned = False

    def start(self, context: dict | None = None):
        self.reset()
        self.context = context or {}  # the family's facts about this forward call (layouts)
        self.active = True

    def stop(self):
        self.reset()
        self.active = False


class RepVideoBlockHook(ModelHook):
    """Blends a block's input streams with the cache mean, runs the block, and adds its outputs to the cache."""

    def __init__(self, index: int, window: int, gates: RepVideoGates, state: _RepVideoState, block_class: type,
                 block_list: BlockList):
        super().__init__()
        self.index = index
        self.window = window
        self.gates = gates
        self.state = state
        self.block_list = block_list
        self.argument_names = list(block_list.streams)
        self.argument_positions = stream_positions(block_class, block_list)
        self.output_indices = list(block_list.outputs) if block_list.outputs is not None else None
        self.relayout = block_list.to_canonical is not None
        self._bypass = 0
        self._block: torch.nn.Module | None = None

    def initialize_hook(self, module):
        self._block = module
        return module

    def new_forward(self, module: torch.nn.Module, *args, **kwargs):
        if self._bypass or not self.state.active:
            return self.fn_ref.original_forward(*args, **kwargs)
        args, kwargs = self.blend_inputs(args, kwargs)
        output = self.fn_ref.original_forward(*args, **kwargs)
        self.update_cache(output)
        return output

    # The two halves of the technique, also called by `_CheckpointedBlocks` around a checkpointed block.
    def blend_inputs(self, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        """``h <- g * mean(cache) + (1 - g) * h`` for every blended stream."""
        state = self.state
        streams = [self._get(args, kwargs, i) for i in range(len(self.argument_names))]
        if state.means is None:
            # First block of the forward call: the cache holds only the embedded input, so its mean is `h`.
            return args, kwargs
        if state.count == 1 and all(m is s for m, s in zip(state.sources, streams)):
            # Right after a reset the cache holds exactly the tensor entering this block: the blend is a no-op.
            return args, kwargs
        # Through the module call, not `.gate[i]`: offloading hooks (accelerate, diffusers) onload weights there.
        gate = self.gates(self.index)
        grad = torch.is_grad_enabled()
        for position, (stream, mean) in enumerate(zip(streams, state.means)):
            if stream is None or mean is None:  # a stream this call does not carry (Kandinsky 6 without audio)
                continue
            weight = gate.to(device=stream.device, dtype=stream.dtype)
            if self.relayout:
                # The cache holds the canonical layout: blend there, hand the block its own layout back.
                canonical = self.block_list.to_canonical(stream, state.context)
                if grad:
                    blended = torch.addcmul(canonical, mean - canonical, weight)
                else:
                    blended = torch.lerp(canonical, mean, weight)
                args, kwargs = self._set(args, kwargs, position, self.block_list.from_canonical(blended, state.context))
                continue
            if not grad:
                if state.owned and state.in_place and not _compat.is_view(stream):
                    # Inference, not compiling (`in_place` is off then: graphs are functional, `is_view` untraceable),
                    # no step cache that may keep block outputs: blend in place. Nothing else reads the input: the
                    # cache holds its own mean (`owned`), the model's loop rebinds its variable to the block's output.
                    stream.lerp_(mean, weight)
                    continue
                blended = torch.lerp(stream, mean, weight)
            elif stream.requires_grad or mean.requires_grad or weight.requires_grad:
                # Training: `lerp` saves both `stream` and `mean` for the gate's gradient, two hidden-state tensors
                # per block that are dead otherwise; `h + (m - h) * g` saves only their difference.
                blended = torch.addcmul(stream, mean - stream, weight)
            else:
                blended = torch.lerp(stream, mean, weight)
            args, kwargs = self._set(args, kwargs, position, blended)
        return args, kwargs

    def update_cache(self, output: Any) -> None:
        state = self.state
        sources = self.outputs_of(output)
        outputs = sources
        if self.relayout:
            outputs = tuple(None if out is None else self.block_list.to_canonical(out, state.context) for out in sources)
        if self.index % self.window == 0 or state.means is None:  # or the first block to run (a step cache skipped)
            state.means, state.sources, state.count, state.owned = outputs, sources, 1, False
            return
        state.count += 1
        state.sources = None  # only the block right after a reset compares against them; keep no tensor alive
        weight = 1.0 / state.count  # running mean: m_n = m_{n-1} + (x_n - m_{n-1}) / n
        if state.owned and not torch.is_grad_enabled():
            for mean, new in zip(state.means, outputs):
                if mean is not None and new is not None:
                    mean.lerp_(new, weight)
        else:
            state.means = tuple(None if mean is None or new is None else torch.lerp(mean, new, weight)
                                for mean, new in zip(state.means, outputs))
            state.owned = True

    def outputs_of(self, output: Any) -> tuple[torch.Tensor, ...]:
        """The blended streams in a block's output, in the order of its inputs."""
        if self.output_indices is None:
            return (output[0] if isinstance(output, (tuple, list)) else output,)
        return tuple(output[i] for i in self.output_indices)

    def call_without_repvideo(self, *args, **kwargs):
        """Run the block (with any other hooks) but without RepVideo: used inside activation checkpointing."""
        return self.bypassed(self._block, args, kwargs)

    def bypassed(self, function, args, kwargs):
        self._bypass += 1
        try:
            return function(*args, **kwargs)
        finally:
            self._bypass -= 1

    def _get(self, args, kwargs, stream: int):
        name, position = self.argument_names[stream], self.argument_positions[stream]
        return kwargs[name] if name in kwargs else args[position]

    def _set(self, args, kwargs, stream: int, value):
        name, position = self.argument_names[stream], self.argument_positions[stream]
        if name in kwargs:
            return args, {**kwargs, name: value}
        return args[:position] + (value,) + args[position + 1 :], kwargs


class _CheckpointedBlocks:
    """Wraps the function a transformer calls its blocks through under gradient checkpointing, so the blend and the
    cache update run *outside* the checkpointed region, as in the official code: recomputation during backward then
    replays only the block and never sees a cache that has moved on."""

    def __init__(self, checkpoint_func, hooks: dict[int, RepVideoBlockHook]):
        self.checkpoint_func = checkpoint_func
        self.hooks = hooks

    def __call__(self, function, *args, **kwargs):
        # A block, or a bound method of one (Cosmos 3 checkpoints `layer.__call__`).
        hook = self.hooks.get(id(getattr(function, "__self__", function)))
        if hook is None or not hook.state.active:
            return self.checkpoint_func(function, *args, **kwargs)
        args, kwargs = hook.blend_inputs(args, kwargs)
        if torch.compiler.is_compiling():
            # Dynamo traces the checkpointed function once (recomputation replays that graph) and cannot trace one
            # that changes Python state: bypass RepVideo around the checkpoint call instead of inside it.
            output = hook.bypassed(self.checkpoint_func, (function, *args), kwargs)
        else:
            output = self.checkpoint_func(hook.call_without_repvideo, *args, **kwargs)
        hook.update_cache(output)
        return output


class _OutsideCompiledRegion:
    """Stands in for a block's compiled call (``block.compile()``, ``compile_repeated_blocks``): the blend and cache
    update run *outside* the compiled region; inside it the hook always sees ``_bypass == 1``. So every block of a
    class traces the same code: one graph per class, not one per block (index and cache state would be guards)."""

    def __init__(self, hook: RepVideoBlockHook, compiled):
        self.hook = hook
        self.compiled = compiled

    def __call__(self, *args, **kwargs):
        hook = self.hook
        if hook._bypass or not hook.state.active:  # `_bypass` is already 1 inside activation checkpointing
            return self.compiled(*args, **kwargs) if hook._bypass else hook.bypassed(self.compiled, args, kwargs)
        args, kwargs = hook.blend_inputs(args, kwargs)
        output = hook.bypassed(self.compiled, args, kwargs)
        hook.update_cache(output)
        return output


def _wrap_compiled_blocks(hooks: dict[int, RepVideoBlockHook]) -> None:
    """Put `_OutsideCompiledRegion` around every block compiled since the last call (before or after RepVideo)."""
    for hook in hooks.values():
        compiled = _compat.compiled_call(hook._block)
        if compiled is not None and not isinstance(compiled, _OutsideCompiledRegion):
            _compat.set_compiled_call(hook._block, _OutsideCompiledRegion(hook, compiled))


class _Attachment:
    """Everything `apply_repvideo` changed on a transformer, so `remove_repvideo` can undo exactly that."""

    def __init__(self, state, hooks, handles, created_registries, family):
        self.family = family
        self.state = state
        self.hooks = hooks
        self.handles = handles
        self.created_registries = created_registries


def _start_forward(transformer, args, kwargs):
    attachment: _Attachment = getattr(transformer, _STATE_ATTRIBUTE)
    checkpoint_func = _compat.get_checkpointing_func(transformer)
    if checkpoint_func is not None and not isinstance(checkpoint_func, _CheckpointedBlocks):
        # Installed here, not at apply time, so `enable_gradient_checkpointing()` may come before or after RepVideo.
        _compat.set_checkpointing_func(transformer, _CheckpointedBlocks(checkpoint_func, attachment.hooks))
    compiling = torch.compiler.is_compiling()  # the in-place blend is for eager runs without a step cache
    if not compiling:
        _wrap_compiled_blocks(attachment.hooks)
    attachment.state.in_place = not compiling and not _compat.step_cache_enabled(
        transformer, [hook._block for hook in attachment.hooks.values()])
    context = attachment.family.forward_context
    attachment.state.start(context(transformer, args, kwargs) if context is not None else None)


def _stop_forward(transformer, args, kwargs, output):
    getattr(transformer, _STATE_ATTRIBUTE).state.stop()  # nothing leaks into the next call


def apply_repvideo(
    transformer: torch.nn.Module, config_or_weights: RepVideoConfig | str | os.PathLike | None = None
) -> RepVideoGates:
    r"""Attach RepVideo's feature cache and learned gates to a video diffusion transformer.

    Args:
        transformer (`torch.nn.Module`):
            A transformer of a registered family (see `repvideo_diffusers.families`), e.g.
            `CogVideoXTransformer3DModel`.
        config_or_weights (`RepVideoConfig`, `str` or `os.PathLike`, *optional*):
            A `RepVideoConfig` for fresh gates; a local folder or Hub id of gates saved with
            `RepVideoGates.save_pretrained` (a pipeline folder with a `repvideo/` subfolder works too); or `None`:
            the gates saved with the model if there are any, else `RepVideoConfig()`.

    Returns:
        `RepVideoGates`: the gates, one per block in execution order, registered as `transformer.repvideo_gates`
        (so they follow `.to()` and appear in `transformer.parameters()`).

    Raises:
        `ValueError`: unsupported model, RepVideo already applied, a diffusers cache already enabled, or gates
        saved for another model. The transformer is left untouched in every case.

    Example:
        ```python
        >>> import torch
        >>> from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo
        >>> from repvideo_diffusers.tiny import build_tiny_transformer

        >>> transformer = build_tiny_transformer()
        >>> gates = apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.5))
        >>> gates.gate.shape
        torch.Size([4])
        >>> remove_repvideo(transformer)

        ```
    """
    family = get_family(transformer)
    if hasattr(transformer, _STATE_ATTRIBUTE):
        raise ValueError(
            "RepVideo is already applied to this transformer. Call `remove_repvideo(transformer)` (or "
            "`pipe.disable_repvideo()`) first, or use `pipe.enable_repvideo(...)`, which replaces it."
        )
    if getattr(transformer, "is_cache_enabled", False):
        raise ValueError(
            "A diffusers cache (e.g. FirstBlockCache) is already enabled on this transformer. RepVideo must sit "
            "inside it: call `transformer.disable_cache()`, apply RepVideo, then `transformer.enable_cache(...)`."
        )
    blocks = list(family.block_lists(transformer))
    if not blocks:
        raise ValueError(
            f"This {family.name} transformer has no blocks in {[b.attribute for b in family.blocks]}: nothing to gate."
        )
    # Every block must match its family's facts before anything changes (raises naming the mismatch).
    for block_list, block in blocks:
        stream_positions(type(block), block_list)
    gates: RepVideoGates = resolve_gates(config_or_weights, transformer, num_blocks=len(blocks), family=family.name)

    reference = next(transformer.parameters(), None)
    if reference is not None and reference.device.type != "meta":
        # nn.Module.to, not ModelMixin.to: the gates are one tensor, nothing in them needs float32 protection.
        torch.nn.Module.to(gates, device=reference.device, dtype=gate_dtype(transformer))

    state = _RepVideoState()
    hooks, created = {}, []
    for index, (block_list, block) in enumerate(blocks):
        if _compat.hook_registry(block) is None:
            created.append(block)
        hook = RepVideoBlockHook(index, gates.config.window, gates, state, type(block), block_list)
        HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, _BLOCK_HOOK)
        hooks[id(block)] = hook
    handles = [
        transformer.register_forward_pre_hook(_start_forward, with_kwargs=True),
        transformer.register_forward_hook(_stop_forward, with_kwargs=True, always_call=True),
    ]
    setattr(transformer, _GATES_ATTRIBUTE, gates)
    setattr(transformer, _STATE_ATTRIBUTE, _Attachment(state, hooks, handles, created, family))
    logger.info(f"RepVideo applied to {len(blocks)} {family.name} blocks (window {gates.config.window}).")
    return gates


def remove_repvideo(transformer: torch.nn.Module) -> None:
    """Detach RepVideo: afterwards the transformer computes exactly what it computed before `apply_repvideo`.

    Does nothing if RepVideo is not applied.

    Example:
        ```python
        >>> from repvideo_diffusers import apply_repvideo, remove_repvideo
        >>> from repvideo_diffusers.tiny import build_tiny_transformer

        >>> transformer = build_tiny_transformer()
        >>> _ = apply_repvideo(transformer)
        >>> remove_repvideo(transformer)
        >>> hasattr(transformer, "repvideo_gates")
        False

        ```
    """
    attachment: _Attachment | None = getattr(transformer, _STATE_ATTRIBUTE, None)
    if attachment is None:
        return
    for handle in attachment.handles:
        handle.remove()
    checkpoint_func = _compat.get_checkpointing_func(transformer)
    if isinstance(checkpoint_func, _CheckpointedBlocks):
        _compat.set_checkpointing_func(transformer, checkpoint_func.checkpoint_func)
    for block in get_transformer_blocks(transformer):
        compiled = _compat.compiled_call(block)
        if isinstance(compiled, _OutsideCompiledRegion):
            _compat.set_compiled_call(block, compiled.compiled)
        registry = _compat.hook_registry(block)
        if registry is None:
            continue
        registry.remove_hook(_BLOCK_HOOK, recurse=False)
        if block in attachment.created_registries:
            _compat.drop_hook_registry(block)  # leave the block as it was: no empty registry, no instance `forward`
    delattr(transformer, _GATES_ATTRIBUTE)
    delattr(transformer, _STATE_ATTRIBUTE)
    attachment.state.stop()


def is_repvideo_applied(transformer: torch.nn.Module) -> bool:
    """Whether `apply_repvideo` is in effect on `transformer`."""
    return hasattr(transformer, _STATE_ATTRIBUTE)

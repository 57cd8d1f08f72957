"""RepVideo: a cross-layer feature cache with learned gates for video diffusion transformers.

Paper: "RepVideo: Rethinking Cross-Layer Representation for Video Generation", Si et al., arXiv 2501.08994.

Before every transformer block ``i`` the stream ``h`` entering it is blended with the mean of a *feature cache*
that holds the outputs of the preceding blocks of the current *window*::

    h <- g[i] * mean(cache) + (1 - g[i]) * h        # one learned scalar gate per block
    h  = block_i(h)
    cache = [h] if i % window == 0 else cache + [h]

The whole technique lives in this module: a config dataclass, one shared per-forward state, a hook per block
(diffusers ``ModelHook``) and ``apply_repvideo`` / ``remove_repvideo``. Per-model facts (which block lists run in
which order) are one table, ``SUPPORTED_MODELS``; where the streams sit in each block's arguments and outputs
comes from diffusers' ``TransformerBlockRegistry``.
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks._helpers import TransformerBlockRegistry
from diffusers.utils import logging

if TYPE_CHECKING:  # pragma: no cover
    from .gates import RepVideoGates

logger = logging.get_logger(__name__)

_BLOCK_HOOK = "repvideo_block"
_GATES_ATTRIBUTE = "repvideo_gates"
_STATE_ATTRIBUTE = "_repvideo_state"


@dataclass
class RepVideoConfig:
    r"""Configuration of RepVideo's feature cache and gates (arXiv 2501.08994, Sec. 3).

    Args:
        window (`int`, defaults to `6`):
            Number of consecutive blocks whose outputs the feature cache aggregates. The cache is reset after every
            block whose index is a multiple of ``window`` (blocks 0, 6, 12, ... in the official CogVideoX-2B model).
            ``window=1`` makes every blend a no-op.
        gate_init (`float`, defaults to `0.5`):
            Initial value of every learned gate ``g``: the weight of the cache mean in ``g * mean + (1 - g) * h``.
            ``0.5`` is the official initialisation; ``0.0`` starts from exactly the base model (identity start
            for fine-tuning). Untrained gates at 0.5 *change* the base model's output.
    """

    window: int = 6
    gate_init: float = 0.5

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ValueError(
                f"RepVideoConfig.window must be an integer >= 1 (the number of blocks per cache window), "
                f"got {self.window!r}. Use window=6 for the official setting."
            )
        try:
            gate = float(self.gate_init)
        except (TypeError, ValueError):
            gate = float("nan")
        if not math.isfinite(gate):
            raise ValueError(
                f"RepVideoConfig.gate_init must be a finite number (the initial gate value, usually in [0, 1]), "
                f"got {self.gate_init!r}. Use gate_init=0.5 (official) or 0.0 (identity start)."
            )
        self.gate_init = gate


class ModelSpec(NamedTuple):
    """Facts RepVideo needs about one transformer class."""

    family: str
    block_lists: tuple[str, ...]  # attribute names of the block ModuleLists, in execution order


# One table of per-model facts. Whether a block is joint-attention (both streams blended) or cross-attention
# (only `hidden_states`) is read from diffusers' TransformerBlockRegistry, not repeated here.
SUPPORTED_MODELS: dict[str, ModelSpec] = {
    "CogVideoXTransformer3DModel": ModelSpec("CogVideoX", ("transformer_blocks",)),
    "WanTransformer3DModel": ModelSpec("Wan", ("blocks",)),
    "HunyuanVideoTransformer3DModel": ModelSpec("HunyuanVideo", ("transformer_blocks", "single_transformer_blocks")),
    "LTXVideoTransformer3DModel": ModelSpec("LTX-Video", ("transformer_blocks",)),
    "MochiTransformer3DModel": ModelSpec("Mochi", ("transformer_blocks",)),
}


def _supported_families() -> str:
    return ", ".join(f"{spec.family} ({name})" for name, spec in SUPPORTED_MODELS.items())


def get_model_spec(transformer: torch.nn.Module) -> ModelSpec:
    """Return the `ModelSpec` of a supported transformer, or raise `ValueError` naming the supported families."""
    for cls in type(transformer).__mro__:
        if cls.__name__ in SUPPORTED_MODELS:
            return SUPPORTED_MODELS[cls.__name__]
    raise ValueError(
        f"RepVideo does not support {type(transformer).__name__}. Supported transformers: {_supported_families()}. "
        "Pass the pipeline's video transformer (for example `pipe.transformer`)."
    )


def get_transformer_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a supported model, in execution order (the order of the gates)."""
    spec = get_model_spec(transformer)
    return [block for name in spec.block_lists for block in getattr(transformer, name)]


class _RepVideoState:
    """The feature cache of one transformer forward call.

    The cache is held as a running mean per stream (`means`) plus the number of tensors it aggregates (`count`):
    the same numbers as re-stacking the cached tensors, with O(1) work per block and one resident tensor per stream.
    """

    def __init__(self):
        self.active = False
        self.reset()

    def reset(self):
        self.means: tuple[torch.Tensor, ...] | None = None
        self.count = 0
        # False while `means` still aliases a block output that flows on to the next block: it must not be
        # updated in place until it has been replaced by a tensor of our own.
        self.owned = False

    def start(self):
        self.reset()
        self.active = True

    def stop(self):
        self.reset()
        self.active = False


class RepVideoBlockHook(ModelHook):
    """Blends a block's input streams with the cache mean, runs the block, and adds its outputs to the cache."""

    def __init__(self, index: int, window: int, gates: "RepVideoGates", state: _RepVideoState, block_class: type):
        super().__init__()
        self.index = index
        self.window = window
        self.gates = gates
        self.state = state
        metadata = TransformerBlockRegistry.get(block_class)
        self.output_indices = [metadata.return_hidden_states_index]
        self.argument_names = [metadata.hidden_states_argument_name]
        if metadata.return_encoder_hidden_states_index is not None:  # joint attention: both streams
            self.output_indices.append(metadata.return_encoder_hidden_states_index)
            self.argument_names.append(metadata.encoder_hidden_states_argument_name)
        parameters = list(inspect.signature(block_class.forward).parameters)[1:]
        self.argument_positions = [parameters.index(name) for name in self.argument_names]
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
        if state.count == 1 and all(m is s for m, s in zip(state.means, streams)):
            # Right after a reset the cache holds exactly the tensor entering this block: the blend is a no-op.
            return args, kwargs
        # Through the module call, not `.gate[i]`: offloading hooks (accelerate, diffusers) onload weights there.
        gate = self.gates(self.index)
        grad = torch.is_grad_enabled()
        for position, (stream, mean) in enumerate(zip(streams, state.means)):
            weight = gate.to(device=stream.device, dtype=stream.dtype)
            if not grad:
                if state.owned and not stream._is_view():
                    # Inference: blend into the block's input in place. Nothing else reads it: the cache holds its
                    # own running mean (`owned`) and the model's loop rebinds its variable to this block's output.
                    # Saves one hidden-state allocation per stream and block, and keeping both tensors alive.
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
        outputs = tuple(output[i] for i in self.output_indices) if isinstance(output, tuple) else (output,)
        if self.index % self.window == 0:
            state.means, state.count, state.owned = outputs, 1, False
            return
        state.count += 1
        weight = 1.0 / state.count  # running mean: m_n = m_{n-1} + (x_n - m_{n-1}) / n
        if state.owned and not torch.is_grad_enabled():
            for mean, new in zip(state.means, outputs):
                mean.lerp_(new, weight)
        else:
            state.means = tuple(torch.lerp(mean, new, weight) for mean, new in zip(state.means, outputs))
            state.owned = True

    def call_without_repvideo(self, *args, **kwargs):
        """Run the block (with any other hooks) but without RepVideo: used inside activation checkpointing."""
        self._bypass += 1
        try:
            return self._block(*args, **kwargs)
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
    """Wraps a transformer's ``_gradient_checkpointing_func`` so the blend and the cache update run *outside* the
    checkpointed region, as in the official code: recomputation during backward then replays only the block and
    never sees a cache that has moved on."""

    def __init__(self, checkpoint_func, hooks: dict[int, RepVideoBlockHook]):
        self.checkpoint_func = checkpoint_func
        self.hooks = hooks

    def __call__(self, function, *args, **kwargs):
        hook = self.hooks.get(id(function))
        if hook is None or not hook.state.active:
            return self.checkpoint_func(function, *args, **kwargs)
        args, kwargs = hook.blend_inputs(args, kwargs)
        output = self.checkpoint_func(hook.call_without_repvideo, *args, **kwargs)
        hook.update_cache(output)
        return output


class _Attachment:
    """Everything `apply_repvideo` changed on a transformer, so `remove_repvideo` can undo exactly that."""

    def __init__(self, state, hooks, handles, created_registries):
        self.state = state
        self.hooks = hooks
        self.handles = handles
        self.created_registries = created_registries


def _start_forward(transformer, args, kwargs):
    attachment: _Attachment = getattr(transformer, _STATE_ATTRIBUTE)
    checkpoint_func = getattr(transformer, "_gradient_checkpointing_func", None)
    if checkpoint_func is not None and not isinstance(checkpoint_func, _CheckpointedBlocks):
        # Installed here, not at apply time, so `enable_gradient_checkpointing()` may come before or after RepVideo.
        transformer._gradient_checkpointing_func = _CheckpointedBlocks(checkpoint_func, attachment.hooks)
    attachment.state.start()


def _stop_forward(transformer, args, kwargs, output):
    getattr(transformer, _STATE_ATTRIBUTE).state.stop()  # nothing leaks into the next call


def apply_repvideo(
    transformer: torch.nn.Module, config_or_weights: RepVideoConfig | str | os.PathLike | None = None
) -> "RepVideoGates":
    r"""Attach RepVideo's feature cache and learned gates to a video diffusion transformer.

    Args:
        transformer (`torch.nn.Module`):
            A supported diffusers transformer (see `SUPPORTED_MODELS`), e.g. `CogVideoXTransformer3DModel`.
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
    from .gates import resolve_gates

    spec = get_model_spec(transformer)
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
    blocks = get_transformer_blocks(transformer)
    for block in blocks:
        TransformerBlockRegistry.get(type(block))  # every block class must be known before anything changes
    gates: RepVideoGates = resolve_gates(config_or_weights, transformer, num_blocks=len(blocks), family=spec.family)

    reference = next(transformer.parameters(), None)
    if reference is not None and reference.device.type != "meta":
        # nn.Module.to, not ModelMixin.to: the gates are one tensor, nothing in them needs float32 protection.
        torch.nn.Module.to(gates, device=reference.device, dtype=reference.dtype)

    state = _RepVideoState()
    hooks, created = {}, []
    for index, block in enumerate(blocks):
        if not hasattr(block, "_diffusers_hook"):
            created.append(block)
        hook = RepVideoBlockHook(index, gates.config.window, gates, state, type(block))
        HookRegistry.check_if_exists_or_initialize(block).register_hook(hook, _BLOCK_HOOK)
        hooks[id(block)] = hook
    handles = [
        transformer.register_forward_pre_hook(_start_forward, with_kwargs=True),
        transformer.register_forward_hook(_stop_forward, with_kwargs=True, always_call=True),
    ]
    setattr(transformer, _GATES_ATTRIBUTE, gates)
    setattr(transformer, _STATE_ATTRIBUTE, _Attachment(state, hooks, handles, created))
    logger.info(f"RepVideo applied to {len(blocks)} {spec.family} blocks (window {gates.config.window}).")
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
    checkpoint_func = getattr(transformer, "_gradient_checkpointing_func", None)
    if isinstance(checkpoint_func, _CheckpointedBlocks):
        transformer._gradient_checkpointing_func = checkpoint_func.checkpoint_func
    for block in get_transformer_blocks(transformer):
        registry = getattr(block, "_diffusers_hook", None)
        if registry is None:
            continue
        registry.remove_hook(_BLOCK_HOOK, recurse=False)
        if block in attachment.created_registries and not registry.hooks:
            # Leave the block as it was: no empty registry, no instance-level `forward`.
            del block._diffusers_hook
            bound = block.__dict__.get("forward")
            if getattr(bound, "__func__", None) is type(block).forward:
                del block.forward
    delattr(transformer, _GATES_ATTRIBUTE)
    delattr(transformer, _STATE_ATTRIBUTE)
    attachment.state.stop()


def is_repvideo_applied(transformer: torch.nn.Module) -> bool:
    """Whether `apply_repvideo` is in effect on `transformer`."""
    return hasattr(transformer, _STATE_ATTRIBUTE)

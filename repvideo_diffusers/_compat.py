"""Every access to a private name of another library (diffusers, torch, accelerate) lives in this module.

A plugin lives on another library's internals only where it must. Each function below says why it needs the
private name and on which versions that was verified, so that a new release means reading this one file. The rest of
the package uses only public names (a test checks that).

Supported diffusers: ``SUPPORTED_DIFFUSERS`` (the range CI tests: its lowest release and the newest). Importing
``repvideo_diffusers`` with another version warns once, naming the range.
"""

from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # annotations only: importing this module (and so the package) must not import torch
    import torch

# The diffusers releases CI runs the core tests on (parity, remove, gradient checkpointing, save/load).
SUPPORTED_DIFFUSERS = ("0.40.0", "0.43.0")  # lowest supported, first unsupported
VERIFIED_DIFFUSERS = ("0.40.0", "0.41.0", "0.42.1")


def _version_tuple(version: str) -> tuple[int, ...]:
    numbers = []
    for part in version.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits) if digits else 0)
    return tuple(numbers)


def diffusers_version_problem(version: str | None = None) -> str | None:
    """``None`` if ``version`` (default: the installed diffusers) is in the supported range, else why not."""
    if version is None:
        import sys
        from importlib.metadata import version as installed_version

        # The imported module's version when diffusers is loaded; otherwise read the installed one without importing
        # diffusers (seconds), so that the command line starts fast.
        loaded = sys.modules.get("diffusers")
        version = getattr(loaded, "__version__", None) or installed_version("diffusers")
    low, high = SUPPORTED_DIFFUSERS
    if _version_tuple(low) <= _version_tuple(version) < _version_tuple(high):
        return None
    return (
        f"repvideo-diffusers supports diffusers >= {low}, < {high} (tested on {', '.join(VERIFIED_DIFFUSERS)}); "
        f"diffusers {version} is installed. RepVideo relies on a few diffusers internals listed in "
        f"repvideo_diffusers/_compat.py; install a supported version (`pip install 'diffusers>={low},<{high}'`) or "
        "check that file against your version."
    )


@functools.lru_cache(maxsize=None)
def warn_if_unsupported_diffusers() -> None:
    """Warn once (``UserWarning``) when the installed diffusers is outside `SUPPORTED_DIFFUSERS`."""
    problem = diffusers_version_problem()
    if problem is not None:
        warnings.warn(problem, UserWarning, stacklevel=3)


# ----------------------------------------------------------------------------------------------------------------
# diffusers: hooks
# ----------------------------------------------------------------------------------------------------------------

# `HookRegistry.check_if_exists_or_initialize` stores a module's registry in this attribute and replaces the module's
# `forward` by an instance attribute. Reading it is the only way to tell whether a block had a registry before
# RepVideo made one, so that `remove_repvideo` can leave the block exactly as it was. Verified on 0.40.0 - 0.42.1.
_HOOK_REGISTRY_ATTRIBUTE = "_diffusers_hook"


def hook_registry(module: torch.nn.Module):
    """The diffusers `HookRegistry` of ``module``, or ``None`` if it has none (public names cannot tell)."""
    return getattr(module, _HOOK_REGISTRY_ATTRIBUTE, None)


def drop_hook_registry(module: torch.nn.Module) -> None:
    """Remove an empty diffusers `HookRegistry` and the instance-level ``forward`` it installed, leaving ``module``
    exactly as it was before `HookRegistry.check_if_exists_or_initialize`. Verified on 0.40.0 - 0.42.1."""
    registry = hook_registry(module)
    if registry is None or registry.hooks:
        return
    delattr(module, _HOOK_REGISTRY_ATTRIBUTE)
    bound = module.__dict__.get("forward")
    if getattr(bound, "__func__", None) is type(module).forward:
        del module.forward


def step_cache_enabled(transformer: torch.nn.Module, blocks) -> bool:
    """Whether a step cache that may keep a block's output past the next block is on ``transformer``: a diffusers
    cache (``transformer.enable_cache(...)``, public; or an ``apply_*_cache`` call that left a stateful hook,
    ``ModelHook._is_stateful``, on a block) or cache-dit (``cache_dit.enable_cache`` sets ``transformer._is_cached``).
    RepVideo then blends into a copy, never into a block output such a cache holds (TaylorSeer keeps block outputs,
    cache-dit the input of its middle blocks). Verified on diffusers 0.40.0 - 0.42.1 and cache-dit 1.5.3."""
    if getattr(transformer, "is_cache_enabled", False) or getattr(transformer, "_is_cached", False):
        return True
    for block in blocks:
        registry = hook_registry(block)
        if registry is not None and any(getattr(hook, "_is_stateful", False) for hook in registry.hooks.values()):
            return True
    return False


# ----------------------------------------------------------------------------------------------------------------
# diffusers: gradient checkpointing
# ----------------------------------------------------------------------------------------------------------------

# `ModelMixin.enable_gradient_checkpointing` sets `_gradient_checkpointing_func`, and every supported transformer calls
# its blocks as `self._gradient_checkpointing_func(block, ...)` while checkpointing. RepVideo wraps that function so
# the blend and the cache update run outside the checkpointed region (as the official code does); there is no public
# hook at that point. Verified on 0.40.0 - 0.42.1.
_CHECKPOINT_ATTRIBUTE = "_gradient_checkpointing_func"


def get_checkpointing_func(model: torch.nn.Module) -> Callable | None:
    """The function the model calls its blocks through under gradient checkpointing, if it has one."""
    return getattr(model, _CHECKPOINT_ATTRIBUTE, None)


def set_checkpointing_func(model: torch.nn.Module, function: Callable) -> None:
    setattr(model, _CHECKPOINT_ATTRIBUTE, function)


# ----------------------------------------------------------------------------------------------------------------
# diffusers: configs and pipelines
# ----------------------------------------------------------------------------------------------------------------


def name_or_path(obj: Any) -> str | None:
    """Where a model or pipeline was loaded from: ``config._name_or_path``, which `from_pretrained` records and no
    public name exposes. Verified on 0.40.0 - 0.42.1."""
    config = getattr(obj, "config", None)
    value = getattr(config, "_name_or_path", None) if config is not None else None
    return str(value) if value else None


def get_progress_bar_config(pipe) -> dict:
    """A copy of the pipeline's progress-bar settings (`set_progress_bar_config` writes them; nothing public reads
    them back), so a tool can silence the bar and restore it. Verified on 0.40.0 - 0.42.1."""
    return dict(getattr(pipe, "_progress_bar_config", {}))


def restore_progress_bar_config(pipe, config: dict) -> None:
    pipe._progress_bar_config = dict(config)


def cogvideox_rotary_embeddings(pipe, height: int, width: int, frames: int, device):
    """`CogVideoXPipeline._prepare_rotary_positional_embeddings`: the rotary table the pipeline's denoising loop
    builds (CogVideoX-5B, 1.5), so that training sees exactly what inference sees. Verified on 0.40.0 - 0.42.1."""
    return pipe._prepare_rotary_positional_embeddings(height, width, frames, device)


def ltx_normalize_latents(pipe, latents, vae):
    """`LTXPipeline._normalize_latents`: the latent normalisation of the LTX-Video pipeline. Verified on 0.40.0 -
    0.42.1."""
    return pipe._normalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)


def ltx_pack_latents(pipe, latents):
    """`LTXPipeline._pack_latents`: (B, C, F, H, W) latents -> the token sequence LTX-Video's transformer takes.
    Verified on 0.40.0 - 0.42.1."""
    return pipe._pack_latents(latents, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)


# ----------------------------------------------------------------------------------------------------------------
# diffusers: attention processors
# ----------------------------------------------------------------------------------------------------------------


def processor_attention_backend(processor) -> str | None:
    """The diffusers attention backend set on a processor by `ModelMixin.set_attention_backend` (``None``: the
    global default). Stored in the processor's ``_attention_backend``; verified on 0.40.0 - 0.42.1."""
    backend = getattr(processor, "_attention_backend", None)
    return None if backend is None else str(getattr(backend, "value", backend))


# ----------------------------------------------------------------------------------------------------------------
# torch
# ----------------------------------------------------------------------------------------------------------------


def is_view(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a view of another tensor's storage (`Tensor._is_view`, no public equivalent). RepVideo
    blends in place only into tensors that are not views. Verified on torch 2.13."""
    return tensor._is_view()


# `Module.compile()` (and so diffusers' `ModelMixin.compile_repeated_blocks`) stores `torch.compile(self._call_impl)`
# in `_compiled_call_impl`, which `Module.__call__` calls instead of `_call_impl`. Everything a block's hooks do then
# runs inside the compiled region, and RepVideo's per-block Python state (block index, cache) would become guards:
# one graph per block. RepVideo puts its blend and cache update around that call instead, outside the region; there
# is no public hook between `Module.__call__` and the compiled call. Verified on torch 2.13.
_COMPILED_CALL_ATTRIBUTE = "_compiled_call_impl"


def compiled_call(module: torch.nn.Module) -> Callable | None:
    """The compiled call `Module.compile()` installed on ``module``, or ``None``."""
    return module.__dict__.get(_COMPILED_CALL_ATTRIBUTE)


def set_compiled_call(module: torch.nn.Module, function: Callable) -> None:
    """Replace the compiled call of a module that `Module.compile()` compiled. Verified on torch 2.13."""
    setattr(module, _COMPILED_CALL_ATTRIBUTE, function)


# Counting what torch.compile builds (tests): public torch tells neither how many graphs dynamo made nor lets a test
# forbid recompiles. diffusers' own compile tests use the same two config switches. Verified on torch 2.13.


def graph_counter(backend: str = "aot_eager"):
    """A `torch.compile` backend that compiles with ``backend`` and counts the graphs dynamo hands it
    (``.frame_count``): `torch._dynamo.testing.CompileCounterWithBackend`. Verified on torch 2.13."""
    from torch._dynamo.testing import CompileCounterWithBackend

    return CompileCounterWithBackend(backend)


def recompile_limit(limit: int):
    """Context manager: dynamo keeps at most ``limit`` graphs per code object (``torch._dynamo.config``'s
    ``recompile_limit``; diffusers' ``test_torch_compile_repeated_blocks`` uses 1). Verified on torch 2.13."""
    import torch._dynamo

    return torch._dynamo.config.patch(recompile_limit=limit)


def fail_on_recompile():
    """Context manager: any recompilation raises (``error_on_recompile``, as diffusers'
    ``test_torch_compile_recompilation_and_graph_break``). Verified on torch 2.13."""
    import torch._dynamo

    return torch._dynamo.config.patch(error_on_recompile=True)


def legacy_vae_attention_kwargs() -> dict:
    """Keyword arguments for diffusers' `Attention` in a VAE mid-block: ``_from_deprecated_attn_block=True`` marks it
    as the old VAE attention block, so that diffusers' loader maps checkpoints written with the old weight names
    (``query`` / ``key`` / ``value`` / ``proj_attn``), as CV-VAE SD3's are, onto ``to_q`` / ``to_k`` / ``to_v`` /
    ``to_out``. The argument has no public spelling. Verified on diffusers 0.40.0 - 0.42.1."""
    return {"_from_deprecated_attn_block": True}


# ----------------------------------------------------------------------------------------------------------------
# accelerate
# ----------------------------------------------------------------------------------------------------------------


def reset_accelerator_state_if_single_process() -> None:
    """accelerate keeps one global state per process and refuses to change mixed precision once set; a second
    training run in the same process (a notebook, the tests) needs it afresh. Only when not distributed.
    `AcceleratorState._shared_state` / `_reset_state` verified on accelerate 1.15."""
    from accelerate.state import AcceleratorState, DistributedType

    if AcceleratorState._shared_state and AcceleratorState().distributed_type == DistributedType.NO:
        AcceleratorState._reset_state()


# ----------------------------------------------------------------------------------------------------------------
# Python's import system
# ----------------------------------------------------------------------------------------------------------------


def module_being_imported() -> str | None:
    """The module name the import statement now running asked for (``"repvideo_diffusers.cvvae"`` while
    ``import repvideo_diffusers.cvvae`` runs the package's ``__init__``), or ``None`` when it cannot be told.

    Python runs a package's ``__init__`` before any of its subpackages and tells it nothing about why; the name is
    in the outermost frame of importlib's ``_find_and_load``. Used only to let ``import repvideo_diffusers.cvvae``
    leave diffusers unpatched. Verified on CPython 3.11; elsewhere (or if the frame is not found) this returns
    ``None``, and the package installs its pipeline methods as usual.
    """
    import sys

    getframe = getattr(sys, "_getframe", None)
    if getframe is None:
        return None
    name, frame = None, getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "_find_and_load" and "importlib" in code.co_filename:
            found = frame.f_locals.get("name")
            name = found if isinstance(found, str) else name
        frame = frame.f_back
    return name

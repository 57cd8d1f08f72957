"""``pipe.enable_repvideo()`` / ``pipe.disable_repvideo()`` on every diffusers pipeline, and gates saved with it.

`install` adds the two methods to `diffusers.DiffusionPipeline` and wraps ``save_pretrained`` of pipelines and models
(`diffusers.ModelMixin`) so that the base weights are saved clean and gates in use are written where loading finds
them: ``repvideo/`` beside ``transformer/`` in a pipeline folder, ``repvideo/`` inside the folder of a transformer
saved on its own. It is idempotent and `uninstall` undoes exactly it;
``import repvideo_diffusers`` calls `install` (importing only a subpackage, such as ``repvideo_diffusers.cvvae``,
patches nothing).
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch

from .. import _compat
from ..families import find_family, get_family, get_transformer_blocks
from .config import RepVideoConfig
from .card import pipeline_tag_of
from .gates import RepVideoGates, _transformer_component, gates_subfolder, is_gates_folder, resolve_gates
from .hooks import apply_repvideo, remove_repvideo

_GATES_MODULE = "repvideo_gates"


def video_transformers(pipe) -> dict[str, torch.nn.Module]:
    """The pipeline's transformer components of a registered family, by component name, in the pipeline's order:
    ``{"transformer": ...}``, or ``{"transformer": ..., "transformer_2": ...}`` for Wan 2.2 A14B."""
    components = getattr(pipe, "components", None) or {"transformer": getattr(pipe, "transformer", None)}
    return {name: module for name, module in components.items()
            if name.startswith("transformer") and isinstance(module, torch.nn.Module) and find_family(module)}


def _chosen(pipe, components) -> dict[str, torch.nn.Module]:
    found = video_transformers(pipe)
    if not found:
        transformer = getattr(pipe, "transformer", None)
        if transformer is not None:
            get_family(transformer)  # raises naming the supported transformers
        raise ValueError(
            f"{type(pipe).__name__} has no `transformer` component, so RepVideo has nothing to attach to. "
            "RepVideo supports the video diffusion transformers of `repvideo_diffusers.families`."
        )
    if components is None:
        return found
    if isinstance(components, str):
        components = (components,)
    unknown = [name for name in components if name not in found]
    if unknown or not components:
        raise ValueError(
            f"components={tuple(components)!r}: this {type(pipe).__name__} has the video transformers "
            f"{tuple(found)}; pick among them (e.g. components=('transformer',))."
        )
    return {name: found[name] for name in components}


def _weights_for(config_or_weights, name: str, chosen: dict) -> object:
    """What one component gets out of `enable_repvideo`'s argument."""
    if isinstance(config_or_weights, dict):
        unknown = sorted(set(config_or_weights) - set(chosen))
        if unknown:
            raise ValueError(f"config_or_weights names {unknown}, which are not among the components {tuple(chosen)}.")
        return config_or_weights.get(name)
    if len(chosen) > 1 and isinstance(config_or_weights, (str, os.PathLike)) and is_gates_folder(config_or_weights):
        raise ValueError(
            f"{str(config_or_weights)!r} holds one set of gates, but this pipeline has {len(chosen)} video "
            f"transformers {tuple(chosen)}. Pass components=('transformer',) to gate one of them, a dict "
            "{component: gates}, or a pipeline folder with repvideo/ and repvideo_2/."
        )
    if len(chosen) > 1 and isinstance(config_or_weights, RepVideoGates):
        raise ValueError(
            f"One RepVideoGates object cannot serve the {len(chosen)} transformers {tuple(chosen)}: pass "
            "components=(...) or a dict {component: gates}."
        )
    return config_or_weights


def enable_repvideo(self, config_or_weights: RepVideoConfig | str | os.PathLike | dict | None = None,
                    components: str | tuple[str, ...] | None = None):
    r"""Turn RepVideo on for this pipeline's video transformer(s); returns the gates of the first one.

    Args:
        config_or_weights: a `RepVideoConfig` (fresh gates for each transformer), a local folder or Hub id of saved
            gates (a pipeline folder gives each transformer its own: ``repvideo/`` for ``transformer``,
            ``repvideo_2/`` for ``transformer_2``), a dict ``{component: any of these}``, or `None`: the gates saved
            in this pipeline's folder if there are any, else `RepVideoConfig()`.
        components: which transformer components to gate (default: every one the pipeline has, e.g. both experts
            of Wan 2.2 A14B). Calling again replaces the gates in use; on error the pipeline is unchanged.

    Example:
        ```python
        >>> import repvideo_diffusers
        >>> from repvideo_diffusers.tiny import load_tiny_pipeline

        >>> pipe = load_tiny_pipeline()
        >>> gates = pipe.enable_repvideo(repvideo_diffusers.RepVideoConfig(gate_init=0.0))
        >>> pipe.disable_repvideo()

        ```
    """
    chosen = _chosen(self, components)
    pipeline_path = _compat.name_or_path(self)
    # Resolve (and validate) every transformer's gates before touching any, so a bad folder leaves all as they were.
    resolved = {}
    for name, transformer in chosen.items():
        resolved[name] = resolve_gates(
            _weights_for(config_or_weights, name, chosen),
            transformer,
            num_blocks=len(get_transformer_blocks(transformer)),
            family=get_family(transformer).name,
            pipeline_path=pipeline_path,
            subfolder=gates_subfolder(name),
            pipeline_tag=pipeline_tag_of(type(self).__name__),
        )
    for name, transformer in chosen.items():
        remove_repvideo(transformer)
        apply_repvideo(transformer, resolved[name])
    return resolved[next(iter(chosen))]


def disable_repvideo(self) -> None:
    """Turn RepVideo off on every video transformer: the pipeline is exactly the original model again."""
    for transformer in video_transformers(self).values():
        remove_repvideo(transformer)


@contextlib.contextmanager
def _gates_detached(transformers: dict):
    """Take the gates out of the transformers' modules for a moment, so their saved weights stay the base model's."""
    detached = {}
    for name, transformer in transformers.items():
        if isinstance(getattr(transformer, _GATES_MODULE, None), RepVideoGates):
            detached[name] = getattr(transformer, _GATES_MODULE)
            delattr(transformer, _GATES_MODULE)
    try:
        yield detached
    finally:
        for name, gates in detached.items():
            setattr(transformers[name], _GATES_MODULE, gates)


def _gated_components(obj, save_directory) -> dict[str, torch.nn.Module]:
    """What a ``save_pretrained`` call saves that may carry gates, keyed by the component name that picks their
    folder: a pipeline's video transformers, or a model saved on its own (keyed by its folder's name, so a bare
    ``transformer_2`` folder gets ``repvideo_2/``, which is where `find_saved_gates` looks)."""
    from diffusers import DiffusionPipeline

    if isinstance(obj, DiffusionPipeline):
        return video_transformers(obj)
    if not isinstance(getattr(obj, _GATES_MODULE, None), RepVideoGates):
        return {}
    return {_transformer_component(os.fspath(save_directory)) or "transformer": obj}


def _with_gates_saved(save_pretrained):
    """Wrap ``save_pretrained`` of `DiffusionPipeline` and `ModelMixin`: with RepVideo on, the base weights are
    saved unchanged and the gates go beside them, where loading finds them again: a pipeline's in `repvideo/` beside
    `transformer/` (`repvideo_2/` beside `transformer_2/`), a transformer saved on its own in `repvideo/` inside its
    folder. The gates are written first, so ``push_to_hub=True`` uploads them with the model; every argument of
    ``save_pretrained`` is passed on unchanged."""

    @functools.wraps(save_pretrained)
    def wrapper(self, save_directory, *args, **kwargs):
        transformers = _gated_components(self, save_directory)
        if not transformers:
            return save_pretrained(self, save_directory, *args, **kwargs)
        with _gates_detached(transformers) as detached:
            if kwargs.get("is_main_process", True):
                for name, gates in detached.items():
                    gates.save_pretrained(os.path.join(save_directory, gates_subfolder(name)))
            return save_pretrained(self, save_directory, *args, **kwargs)

    wrapper.__wrapped_by_repvideo__ = save_pretrained
    return wrapper


def is_installed() -> bool:
    """Whether `install` is in effect on `diffusers.DiffusionPipeline`."""
    from diffusers import DiffusionPipeline

    return getattr(DiffusionPipeline.save_pretrained, "__wrapped_by_repvideo__", None) is not None


def _patched_classes() -> tuple:
    from diffusers import DiffusionPipeline, ModelMixin

    return DiffusionPipeline, ModelMixin


def install() -> None:
    """Add `enable_repvideo` / `disable_repvideo` to `DiffusionPipeline` and make ``save_pretrained`` of pipelines
    and models store enabled gates in `repvideo/`, out of the base weights. Idempotent: calling it twice changes
    nothing more.

    Example:
        ```python
        >>> from diffusers import DiffusionPipeline
        >>> from repvideo_diffusers.core import pipeline
        >>> pipeline.install(); pipeline.install()
        >>> pipeline.uninstall()
        >>> hasattr(DiffusionPipeline, "enable_repvideo")
        False
        >>> pipeline.install()

        ```
    """
    from diffusers import DiffusionPipeline

    if is_installed():
        return
    DiffusionPipeline.enable_repvideo = enable_repvideo
    DiffusionPipeline.disable_repvideo = disable_repvideo
    for cls in _patched_classes():
        cls.save_pretrained = _with_gates_saved(cls.save_pretrained)


def uninstall() -> None:
    """Undo `install`: `DiffusionPipeline` and `ModelMixin` are exactly as diffusers defines them again."""
    from diffusers import DiffusionPipeline

    if not is_installed():
        return
    for cls in _patched_classes():
        if getattr(cls.save_pretrained, "__wrapped_by_repvideo__", None) is not None:
            cls.save_pretrained = cls.save_pretrained.__wrapped_by_repvideo__
    del DiffusionPipeline.enable_repvideo
    del DiffusionPipeline.disable_repvideo

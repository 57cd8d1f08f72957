"""``pipe.enable_repvideo()`` / ``pipe.disable_repvideo()`` on every diffusers pipeline, and gates saved with it.

`install` adds the two methods to `diffusers.DiffusionPipeline` and wraps its ``save_pretrained`` so that gates in
use are written to ``repvideo/`` beside ``transformer/``. It is idempotent and `uninstall` undoes exactly it;
``import repvideo_diffusers`` calls `install` (importing only a subpackage, such as ``repvideo_diffusers.cvvae``,
patches nothing).
"""

from __future__ import annotations

import contextlib
import functools
import os

from .. import _compat
from ..families import get_family, get_transformer_blocks
from .config import RepVideoConfig
from .gates import GATES_SUBFOLDER, resolve_gates
from .hooks import apply_repvideo, remove_repvideo

_GATES_MODULE = "repvideo_gates"


def _transformer(pipe):
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise ValueError(
            f"{type(pipe).__name__} has no `transformer` component, so RepVideo has nothing to attach to. "
            "RepVideo supports the video diffusion transformers of `repvideo_diffusers.families`."
        )
    return transformer


def enable_repvideo(self, config_or_weights: RepVideoConfig | str | os.PathLike | None = None):
    r"""Turn RepVideo on for this pipeline's transformer; returns the gates.

    Args:
        config_or_weights: a `RepVideoConfig` (fresh gates), a local folder or Hub id of saved gates, or `None`:
            the gates saved in this pipeline's folder (`repvideo/` beside `transformer/`) if there are any, else
            `RepVideoConfig()`. Calling it again replaces the gates in use; on error the pipeline is unchanged.

    Example:
        ```python
        >>> import repvideo_diffusers
        >>> from repvideo_diffusers.tiny import load_tiny_pipeline

        >>> pipe = load_tiny_pipeline()
        >>> gates = pipe.enable_repvideo(repvideo_diffusers.RepVideoConfig(gate_init=0.0))
        >>> pipe.disable_repvideo()

        ```
    """
    transformer = _transformer(self)
    family = get_family(transformer)
    # Resolve (and validate) the gates before touching the model, so a bad folder leaves it as it was.
    gates = resolve_gates(
        config_or_weights,
        transformer,
        num_blocks=len(get_transformer_blocks(transformer)),
        family=family.name,
        pipeline_path=_compat.name_or_path(self),
    )
    remove_repvideo(transformer)
    return apply_repvideo(transformer, gates)


def disable_repvideo(self) -> None:
    """Turn RepVideo off: the pipeline is exactly the original model again."""
    remove_repvideo(_transformer(self))


@contextlib.contextmanager
def _gates_detached(transformer):
    """Take the gates out of the transformer's modules for a moment, so its saved weights stay the base model's."""
    gates = getattr(transformer, _GATES_MODULE)
    delattr(transformer, _GATES_MODULE)
    try:
        yield gates
    finally:
        setattr(transformer, _GATES_MODULE, gates)


def _with_gates_saved(save_pretrained):
    """Wrap `DiffusionPipeline.save_pretrained`: with RepVideo on, `transformer/` holds the unchanged base weights
    and the gates go to `repvideo/` beside it, where `enable_repvideo()` finds them again."""

    @functools.wraps(save_pretrained)
    def wrapper(self, save_directory, *args, **kwargs):
        transformer = getattr(self, "transformer", None)
        if transformer is None or _GATES_MODULE not in dict(transformer.named_children()):
            return save_pretrained(self, save_directory, *args, **kwargs)
        with _gates_detached(transformer) as gates:
            result = save_pretrained(self, save_directory, *args, **kwargs)
        gates.save_pretrained(os.path.join(save_directory, GATES_SUBFOLDER))
        return result

    wrapper.__wrapped_by_repvideo__ = save_pretrained
    return wrapper


def is_installed() -> bool:
    """Whether `install` is in effect on `diffusers.DiffusionPipeline`."""
    from diffusers import DiffusionPipeline

    return getattr(DiffusionPipeline.save_pretrained, "__wrapped_by_repvideo__", None) is not None


def install() -> None:
    """Add `enable_repvideo` / `disable_repvideo` to `DiffusionPipeline` and make `save_pretrained` store enabled
    gates in `repvideo/`. Idempotent: calling it twice changes nothing more.

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
    DiffusionPipeline.save_pretrained = _with_gates_saved(DiffusionPipeline.save_pretrained)


def uninstall() -> None:
    """Undo `install`: `DiffusionPipeline` is exactly as diffusers defines it again."""
    from diffusers import DiffusionPipeline

    if not is_installed():
        return
    DiffusionPipeline.save_pretrained = DiffusionPipeline.save_pretrained.__wrapped_by_repvideo__
    del DiffusionPipeline.enable_repvideo
    del DiffusionPipeline.disable_repvideo

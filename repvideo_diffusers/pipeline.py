"""``pipe.enable_repvideo()`` / ``pipe.disable_repvideo()`` on every diffusers pipeline."""

from __future__ import annotations

import os

from diffusers import DiffusionPipeline

from .repvideo import RepVideoConfig, apply_repvideo, get_model_spec, get_transformer_blocks, remove_repvideo


def _transformer(pipe):
    transformer = getattr(pipe, "transformer", None)
    if transformer is None:
        raise ValueError(
            f"{type(pipe).__name__} has no `transformer` component, so RepVideo has nothing to attach to. "
            "RepVideo supports video diffusion transformers (CogVideoX, Wan, HunyuanVideo, LTX-Video, Mochi)."
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
    from .gates import resolve_gates

    transformer = _transformer(self)
    spec = get_model_spec(transformer)
    # Resolve (and validate) the gates before touching the model, so a bad folder leaves it as it was.
    gates = resolve_gates(
        config_or_weights,
        transformer,
        num_blocks=len(get_transformer_blocks(transformer)),
        family=spec.family,
        pipeline_path=getattr(self.config, "_name_or_path", None),
    )
    remove_repvideo(transformer)
    return apply_repvideo(transformer, gates)


def disable_repvideo(self) -> None:
    """Turn RepVideo off: the pipeline is exactly the original model again."""
    remove_repvideo(_transformer(self))


def install() -> None:
    """Add `enable_repvideo` / `disable_repvideo` to `DiffusionPipeline` (done on `import repvideo_diffusers`)."""
    DiffusionPipeline.enable_repvideo = enable_repvideo
    DiffusionPipeline.disable_repvideo = disable_repvideo

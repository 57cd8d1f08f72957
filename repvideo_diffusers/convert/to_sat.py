"""diffusers -> SAT: a CogVideoX transformer + RepVideo gates in the layout the official RepVideo code loads.

The key map is `keymap._RULES` run backwards (``merge``); the gates become ``transformer.learnable_gating``. SAT's
strict inference loading also expects the fixed position tables, which diffusers does not store as weights, so
they are written as SAT registers them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from diffusers.utils import logging

from ..core.gates import GATES_SUBFOLDER, RepVideoGates, load_gates
from ..utils.dtypes import parse_dtype
from ..utils.io import check_new_folder, staged_folder
from .keymap import _RULES, SAT_GATE_KEY, SAT_PREFIX, SAT_WINDOW
from .sat_io import SAT_MODEL_FILE

logger = logging.get_logger(__name__)


def _sat_rotary_tables(config) -> dict[str, torch.Tensor]:
    """``freqs_sin`` / ``freqs_cos`` as SAT's 3-D rotary mixin registers them (CogVideoX 1.0 rotary models): a quarter
    of each head for time, three eighths each for height and width, theta 10000, frequencies repeated in pairs."""
    head = config.attention_head_dim
    frames = (config.sample_frames - 1) // config.temporal_compression_ratio + 1
    height, width = config.sample_height // config.patch_size, config.sample_width // config.patch_size

    def axis(dim: int, length: int) -> torch.Tensor:
        freqs = 1.0 / (10000 ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        return torch.outer(torch.arange(length, dtype=torch.float32), freqs).repeat_interleave(2, dim=-1)

    t, h, w = axis(head // 4, frames), axis(head // 8 * 3, height), axis(head // 8 * 3, width)
    grid = torch.cat([
        t[:, None, None, :].expand(frames, height, width, -1),
        h[None, :, None, :].expand(frames, height, width, -1),
        w[None, None, :, :].expand(frames, height, width, -1),
    ], dim=-1).reshape(frames * height * width, -1)
    return {"mixins.pos_embed.freqs_sin": grid.sin(), "mixins.pos_embed.freqs_cos": grid.cos()}


def _load_transformer(transformer) -> tuple[torch.nn.Module, Path | None]:
    """The transformer itself, or loaded from a pipeline / transformer folder (returned too, to find gates beside)."""
    from diffusers import CogVideoXTransformer3DModel

    folder = None
    if isinstance(transformer, (str, os.PathLike)):
        folder = Path(transformer)
        if (folder / "transformer" / "config.json").is_file():
            model = CogVideoXTransformer3DModel.from_pretrained(folder, subfolder="transformer")
        elif (folder / "config.json").is_file():
            model = CogVideoXTransformer3DModel.from_pretrained(folder)
        else:
            raise FileNotFoundError(
                f"{str(folder)!r} holds no diffusers transformer: expected config.json there or in 'transformer/'. "
                "Pass a CogVideoX pipeline folder or its transformer folder."
            )
    else:
        model = transformer
    if type(model).__name__ != "CogVideoXTransformer3DModel":
        raise ValueError(
            f"export-sat writes the CogVideoX SAT layout, but got a {type(model).__name__}. "
            "Pass a CogVideoXTransformer3DModel (or a CogVideoX pipeline folder)."
        )
    return model, folder


def _find_gates(model: torch.nn.Module, gates: Any, folder: Path | None) -> RepVideoGates:
    """``gates`` as given (gates or a folder), else those applied to ``model``, else ``repvideo/`` beside it."""
    if gates is None:
        gates = getattr(model, "repvideo_gates", None)
        if gates is None and folder is not None:
            for candidate in (folder / GATES_SUBFOLDER, folder.parent / GATES_SUBFOLDER):
                if candidate.is_dir():
                    gates = load_gates(candidate)
                    break
        if gates is None:
            raise ValueError(
                "No RepVideo gates to export: pass gates (a gates folder, RepVideoGates, or a transformer with "
                "RepVideo applied), or a pipeline folder that has 'repvideo/' beside 'transformer/'."
            )
    elif isinstance(gates, (str, os.PathLike)):
        gates = load_gates(gates)
    if not isinstance(gates, RepVideoGates):
        raise ValueError(f"gates must be RepVideoGates or a gates folder, got {type(gates).__name__}.")
    return gates


def _load_transformer_and_gates(transformer, gates) -> tuple[torch.nn.Module, RepVideoGates]:
    model, folder = _load_transformer(transformer)
    return model, _find_gates(model, gates, folder)


def _check_gates_fit(gates: RepVideoGates, num_layers: int) -> None:
    if gates.config.num_blocks != num_layers:
        raise ValueError(
            f"The gates have {gates.config.num_blocks} entries but the transformer has {num_layers} blocks: expected "
            f"one gate per block. Pass the gates trained for this transformer."
        )
    if gates.config.window != SAT_WINDOW:
        raise ValueError(
            f"The gates were trained with feature-cache window {gates.config.window}, but the official SAT code "
            f"hard-codes window {SAT_WINDOW}, so it would compute a different model. Export gates trained with "
            f"RepVideoConfig(window={SAT_WINDOW})."
        )


def _merged_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every transformer weight under its SAT name (unprefixed), fused where SAT fuses; refuses leftovers."""
    num_layers = len(model.transformer_blocks)
    source = {k: v.detach() for k, v in model.state_dict().items()}
    sat: dict[str, torch.Tensor] = {}
    used = set()
    for rule in _RULES:
        indices = [str(i) for i in range(num_layers)] if "{i}" in rule.sat else [None]
        for index in indices:
            modules = [name.replace("{i}", index) if index else name for name in rule.diffusers]
            params = sorted({k[len(modules[0]) + 1:] for k in source if k.startswith(modules[0] + ".")
                             and "." not in k[len(modules[0]) + 1:]})
            for param in params:
                keys = [f"{m}.{param}" for m in modules]
                sat_module = rule.sat.replace("{i}", index) if index else rule.sat
                sat[f"{sat_module}.{param}"] = rule.merge([source[k] for k in keys])
                used.update(keys)
    left = sorted(set(source) - used)
    if left:
        raise ValueError(f"No SAT key for these transformer weights: {left}. This CogVideoX variant cannot be exported.")
    return sat


def _position_tables(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The fixed position tables SAT's strict loading expects (none for CogVideoX1.5, whose tables SAT recomputes)."""
    config = model.config
    if not config.use_rotary_positional_embeddings:
        # SAT's Basic3DPositionEmbeddingMixin: zeros for the text tokens, then the 3-D sin-cos table. diffusers keeps
        # exactly this joint table as its (non-persistent) buffer.
        return {"mixins.pos_embed.pos_embedding": model.patch_embed.pos_embedding.detach()}
    if config.patch_size_t is None:
        return _sat_rotary_tables(config)
    logger.warning("CogVideoX1.5 rotary tables are not exported: SAT recomputes them (pass --force_inference).")
    return {}


def export_sat(
    transformer: torch.nn.Module | str | os.PathLike,
    gates: Any = None,
    out_dir: str | os.PathLike = "repvideo-sat",
    iteration: int = 1,
    dtype: torch.dtype | str | None = None,
    overwrite: bool = False,
) -> Path:
    r"""Write a diffusers CogVideoX transformer + RepVideo gates in the SAT layout the official RepVideo code loads.

    Produces ``out_dir/latest`` (the iteration) and ``out_dir/<iteration>/mp_rank_00_model_states.pt`` with the
    state dict under ``module`` and keys prefixed ``model.diffusion_model.``; the gates become
    ``transformer.learnable_gating``. Fixed position tables (sinusoidal, or rotary for CogVideoX 1.0) are written as
    SAT registers them, so SAT's strict inference loading finds every key. CogVideoX1.5 rotary tables are left to SAT.

    Args:
        transformer: a `CogVideoXTransformer3DModel`, or a pipeline / transformer folder.
        gates: `RepVideoGates`, a gates folder or Hub id; default: the gates applied to `transformer`, else the
            `repvideo/` folder beside it.
        out_dir: output folder (atomic; must not exist or be empty unless ``overwrite=True``).
        iteration: the iteration number recorded in ``latest``.
        dtype: ``"fp16"``, ``"bf16"``, ``"fp32"`` or a torch dtype; default: the transformer's.

    Example:
        ```python
        >>> import tempfile
        >>> from repvideo_diffusers import RepVideoGates
        >>> from repvideo_diffusers.convert import export_sat
        >>> from repvideo_diffusers.tiny import build_tiny_transformer

        >>> folder = export_sat(build_tiny_transformer(), RepVideoGates(num_blocks=4), tempfile.mkdtemp() + "/sat")
        >>> (folder / "latest").read_text()
        '1'

        ```
    """
    dtype = parse_dtype(dtype)
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"iteration must be a non-negative integer, got {iteration!r}.")
    check_new_folder(out_dir, overwrite)  # refuse a non-empty --out before loading the model
    model, gates = _load_transformer_and_gates(transformer, gates)
    _check_gates_fit(gates, len(model.transformer_blocks))
    dtype = dtype or model.dtype
    sat = {**_merged_weights(model), **_position_tables(model), SAT_GATE_KEY: gates.gate.detach()}
    module = {SAT_PREFIX + k: v.to(dtype).contiguous() for k, v in sat.items()}
    with staged_folder(out_dir, overwrite=overwrite) as staging:
        (staging / str(iteration)).mkdir()
        torch.save({"module": module}, staging / str(iteration) / SAT_MODEL_FILE)
        (staging / "latest").write_text(str(iteration))
    return Path(out_dir)

"""diffusers -> SAT: a CogVideoX transformer + RepVideo gates in the layout the official RepVideo code loads.

The key map is `keymap._RULES` run backwards (``merge``); the gates become ``transformer.learnable_gating``. SAT's
strict inference loading also expects the fixed position tables, which diffusers does not store as weights, so
they are written as SAT registers them.
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path
from typing import Any, NamedTuple

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


TRANSFORMER_CLASS = "CogVideoXTransformer3DModel"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
WEIGHTS_INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"


def _transformer_folder(folder: Path) -> Path:
    """The folder holding the transformer's config.json: ``folder/transformer`` of a pipeline, else ``folder``."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder. Pass a CogVideoX pipeline folder or its "
                                "transformer folder.")
    for candidate in (folder / "transformer", folder):
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"{str(folder)!r} holds no diffusers transformer: expected config.json there or in 'transformer/'. "
        "Pass a CogVideoX pipeline folder or its transformer folder."
    )


def _read_config(folder: Path) -> dict:
    """The transformer's config.json, refused unless it names a CogVideoX transformer (a Wan, a CV-VAE, ...)."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a readable JSON config ({error}). Fix or replace the file.") from None
    name = config.get("_class_name") if isinstance(config, dict) else None
    if name != TRANSFORMER_CLASS:
        vae = name is None and isinstance(config, dict) and any("vae" in k or "latent" in k for k in config) \
            or "VAE" in str(name) or "Autoencoder" in str(name)
        found = f"a {name}" if name else "a config without _class_name" + (" (a CV-VAE / VAE folder?)" if vae else "")
        raise ValueError(
            f"export-sat writes the CogVideoX SAT layout, but {str(path)!r} describes {found}, not a "
            f"{TRANSFORMER_CLASS}. Pass a CogVideoX pipeline folder or its transformer folder."
        )
    return config


def _weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a transformer folder: one file, or the shards its index names."""
    index = folder / WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{str(index)!r} is not a safetensors index ({type(error).__name__}: {error}). "
                             "Copy the transformer folder again.") from None
        files = [folder / name for name in dict.fromkeys(weight_map.values())]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise FileNotFoundError(f"{str(index)!r} names shards that do not exist: {absent}. Copy the missing "
                                    "shards (or the whole folder) again.")
        return files
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    raise FileNotFoundError(
        f"{str(folder)!r} has no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME}); found "
        f"{sorted(p.name for p in folder.iterdir())}. export-sat reads safetensors weights: save the transformer "
        "with save_pretrained(safe_serialization=True)."
    )


def _read_weights(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state = {}
    for file in files:
        try:
            state.update(load_file(str(file)))
        except Exception as error:  # noqa: BLE001 - safetensors raises its own type for truncated / corrupt files
            raise ValueError(f"Could not read {str(file)!r} ({type(error).__name__}: {error}): the file is truncated "
                             "or corrupt. Copy or download it again.") from None
    return state


def _check_state(state: dict[str, torch.Tensor], expected: dict[str, torch.Size], folder: Path) -> None:
    """Refuse missing, extra or mis-shaped tensors, listing them: nothing is ever initialised at random."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    mismatched = sorted(f"{k}: {tuple(state[k].shape)} vs {tuple(expected[k])} expected"
                        for k in set(state) & set(expected) if state[k].shape != expected[k])
    problems = [f"{label} ({len(keys)}): {', '.join(keys)}" for label, keys in
                (("missing tensors", missing), ("unexpected tensors", extra), ("shape mismatches", mismatched)) if keys]
    if problems:
        raise ValueError(
            f"The weights in {str(folder)!r} do not match the {TRANSFORMER_CLASS} its config.json describes: "
            + " | ".join(problems) + ". Nothing was written. Export a complete transformer folder (save_pretrained), "
            "or fix config.json."
        )


def _load_transformer_folder(folder: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(config, weights, buffers) of a transformer folder, read strictly: the weights are the files' tensors."""
    from accelerate import init_empty_weights
    from diffusers import CogVideoXTransformer3DModel

    config = _read_config(folder)
    files = _weight_files(folder)
    try:
        with init_empty_weights():  # parameters on the meta device: only shapes, no initialisation
            skeleton = CogVideoXTransformer3DModel.from_config(config)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{str(folder / 'config.json')!r} is not a valid {TRANSFORMER_CLASS} config ({error}). "
                         "Fix config.json.") from None
    expected = {k: v.shape for k, v in skeleton.state_dict().items()}
    state = _read_weights(files)
    _check_state(state, expected, folder)
    buffers = {name: b.detach() for name, b in skeleton.named_buffers()}  # fixed tables, computed from the config
    return dict(skeleton.config), state, buffers


class _Source(NamedTuple):
    """What the export reads: the config, the weights by diffusers name, the fixed tables, and the folder."""

    config: Any
    state: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    folder: Path | None
    gates: RepVideoGates | None


def _load_transformer(transformer) -> _Source:
    """The export's input: a model in memory, or a pipeline / transformer folder read strictly."""
    if isinstance(transformer, (str, os.PathLike)):
        folder = _transformer_folder(Path(transformer))
        config, state, buffers = _load_transformer_folder(folder)
        return _Source(types.SimpleNamespace(**config), state, buffers, Path(transformer), None)
    if type(transformer).__name__ != TRANSFORMER_CLASS:
        raise ValueError(
            f"export-sat writes the CogVideoX SAT layout, but got a {type(transformer).__name__}. "
            f"Pass a {TRANSFORMER_CLASS} (or a CogVideoX pipeline folder)."
        )
    # The gates RepVideo attaches to the transformer are exported as SAT's learnable_gating, not as weights.
    attached = tuple(f"{name}." for name, module in transformer.named_modules() if isinstance(module, RepVideoGates))
    state = {k: v.detach() for k, v in transformer.state_dict().items() if not k.startswith(attached)}
    buffers = {name: b.detach() for name, b in transformer.named_buffers()}
    return _Source(transformer.config, state, buffers, None, getattr(transformer, "repvideo_gates", None))


def _find_gates(source: _Source, gates: Any) -> RepVideoGates:
    """``gates`` as given (gates or a folder), else those applied to the model, else ``repvideo/`` beside it."""
    if gates is None:
        gates = source.gates
        folder = source.folder
        if gates is None and folder is not None:
            for candidate in (folder / GATES_SUBFOLDER, folder.parent / GATES_SUBFOLDER):
                if candidate.is_dir():
                    gates = load_gates(candidate)
                    break
        if gates is None:
            raise ValueError(
                "No RepVideo gates to export: pass gates (--gates: a gates folder, RepVideoGates, or a transformer "
                "with RepVideo applied), or a pipeline folder that has 'repvideo/' beside 'transformer/'."
            )
    elif isinstance(gates, (str, os.PathLike)):
        gates = load_gates(gates)
    if not isinstance(gates, RepVideoGates):
        raise ValueError(f"gates must be RepVideoGates or a gates folder, got {type(gates).__name__}.")
    return gates


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


def _merged_weights(source: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Every transformer weight under its SAT name (unprefixed), fused where SAT fuses; refuses leftovers."""
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


def _position_tables(config, buffers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fixed position tables SAT's strict loading expects (none for CogVideoX1.5, whose tables SAT recomputes)."""
    if not config.use_rotary_positional_embeddings:
        # SAT's Basic3DPositionEmbeddingMixin: zeros for the text tokens, then the 3-D sin-cos table. diffusers keeps
        # exactly this joint table as its (non-persistent) buffer.
        return {"mixins.pos_embed.pos_embedding": buffers["patch_embed.pos_embedding"]}
    if config.patch_size_t is None:
        return _sat_rotary_tables(config)
    logger.warning("CogVideoX1.5 rotary tables are not exported: SAT recomputes them (pass --force_inference).")
    return {}


def _check_out_folder(out_dir, overwrite: bool) -> None:
    """A file at ``out_dir`` is refused even with ``overwrite`` (a folder is written there); see `check_new_folder`."""
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; the SAT checkpoint is a folder. Choose a folder path "
                         "(--overwrite replaces folders only).")
    check_new_folder(out_dir, overwrite)


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
        transformer: a `CogVideoXTransformer3DModel`, or a pipeline / transformer folder, read strictly: its
            config.json must name a CogVideoX transformer and its safetensors weights (one file or shards) must
            hold exactly that model's tensors; missing, extra or mis-shaped tensors are refused, listed.
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
    _check_out_folder(out_dir, overwrite)  # refuse a file or a non-empty folder at --out before loading the model
    source = _load_transformer(transformer)
    gates = _find_gates(source, gates)
    _check_gates_fit(gates, source.config.num_layers)
    dtype = dtype or next(v.dtype for v in source.state.values() if v.is_floating_point())
    sat = {**_merged_weights(source.state, source.config.num_layers), **_position_tables(source.config, source.buffers),
           SAT_GATE_KEY: gates.gate.detach()}
    module = {SAT_PREFIX + k: v.to(dtype).contiguous() for k, v in sat.items()}
    with staged_folder(out_dir, overwrite=overwrite) as staging:
        (staging / str(iteration)).mkdir()
        torch.save({"module": module}, staging / str(iteration) / SAT_MODEL_FILE)
        (staging / "latest").write_text(str(iteration))
    return Path(out_dir)

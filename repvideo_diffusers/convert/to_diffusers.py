"""SAT -> diffusers: a RepVideo SAT checkpoint becomes ``transformer/`` (safetensors) + ``repvideo/`` (gates).

`convert_sat_checkpoint` runs the steps below in order; everything that can fail on the input (unreadable file,
unsupported variant, missing or unexpected keys, wrong gate length, bad config) fails before anything is written:

1. read the transformer part of the SAT state dict (`_read_transformer_state`),
2. infer the transformer config (`_infer_config`) and check the gates against it (`_check_gate`),
3. plan which SAT tensor becomes which diffusers tensor, from shapes only (`_plan`),
4. write, atomically: the base pipeline's other components, the transformer shard by shard, the gates.

Memory stays lean: the SAT file is memory-mapped and at most one shard of new tensors exists at a time.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils import logging

from ..core.gates import GATES_SUBFOLDER, RepVideoGates
from ..utils.dtypes import parse_dtype
from ..utils.io import check_new_folder, staged_folder
from .keymap import (
    _FIXED_TABLES, _OTHER_COMPONENT_PREFIXES, FIRST_QKV_KEY, SAT_GATE_KEY, SAT_PREFIX, SAT_WINDOW, _check_supported,
    _match_sat, _Rule, _sat_name_for, _split_qkv,
)
from .sat_io import load_sat_state_dict
from .transformer_config import (
    base_config_differences, base_transformer_config, infer_transformer_config, read_config_file,
)

logger = logging.get_logger(__name__)

DEFAULT_MAX_SHARD_SIZE = "2GB"
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
               "GIB": 2**30, "TIB": 2**40}


def parse_shard_size(value: int | str) -> int:
    """A shard size in bytes: an integer, or a number with a unit (``"2GB"``, ``"500MB"``, ``"1.5GiB"``).

    Example:
        ```python
        >>> parse_shard_size("2GB"), parse_shard_size("512MiB"), parse_shard_size(1000)
        (2000000000, 536870912, 1000)

        ```
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*", str(value))
    unit = match and match.group(2).upper()
    if isinstance(value, bool) or not match or unit not in _SIZE_UNITS or float(match.group(1)) * _SIZE_UNITS[unit] < 1:
        raise ValueError(f"--max-shard-size expects a positive size like 2GB, 500MB or 1.5GiB (units: B, KB, MB, GB, "
                         f"TB, KiB, MiB, GiB, TiB), got {value!r}.")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


@dataclass
class ConversionResult:
    """What `convert_sat_checkpoint` wrote."""

    out_dir: Path
    variant: str
    num_layers: int
    gates: list[float]
    dtype: torch.dtype
    pipeline: bool
    seconds: float


# --- reading and checking ---------------------------------------------------------------------------------------


def _read_transformer_state(sat_path, allow_unsafe_pickle: bool) -> dict[str, torch.Tensor]:
    """The SAT transformer's tensors, unprefixed; VAE and text-encoder keys are left out (the base pipeline has
    them), anything else outside the transformer prefix is refused."""
    raw = load_sat_state_dict(sat_path, allow_unsafe_pickle=allow_unsafe_pickle)
    state, skipped, foreign = {}, [], []
    has_prefix = any(k.startswith(SAT_PREFIX) for k in raw)
    for key, tensor in raw.items():
        if has_prefix and key.startswith(SAT_PREFIX):
            state[key[len(SAT_PREFIX):]] = tensor
        elif key.startswith(_OTHER_COMPONENT_PREFIXES):
            skipped.append(key)
        elif has_prefix:
            foreign.append(key)
        else:
            state[key] = tensor
    if foreign:
        raise ValueError(
            f"Unexpected keys outside '{SAT_PREFIX}' ({len(foreign)}): {sorted(foreign)[:20]}. Nothing was written. "
            "Pass a SAT CogVideoX/RepVideo transformer checkpoint."
        )
    if skipped:
        logger.info(f"Ignoring {len(skipped)} VAE / text-encoder keys: those components come from the base pipeline.")
    _check_supported(set(state))
    return state


def _infer_config(shapes: dict[str, torch.Size], explicit_config: dict, base: str | None) -> tuple[dict, str]:
    """`infer_transformer_config` with the base pipeline's config, warning when that base looks like another model."""
    base_config = base_transformer_config(base)
    model_config, variant = infer_transformer_config(shapes, explicit_config, base_config)
    differing = base_config_differences(base_config, model_config)
    if differing:
        # Not an error: a fine-tune may reuse another model's VAE and text encoder. But usually it is a wrong --base.
        logger.warning(f"--base {base!r} has a transformer that differs from the checkpoint in {differing}: check that "
                       "its VAE and text encoder are the ones this checkpoint was trained with.")
    return model_config, variant


def _check_gate(gate: torch.Tensor | None, num_layers: int) -> None:
    if gate is None:
        raise ValueError(
            f"missing keys (1): {SAT_PREFIX}{SAT_GATE_KEY}. This is a plain CogVideoX checkpoint without RepVideo "
            "gates; nothing was written. Convert it with diffusers' scripts/convert_cogvideox_to_diffusers.py and "
            "train gates with `pipe.enable_repvideo(RepVideoConfig(...))`."
        )
    if tuple(gate.shape) != (num_layers,):
        raise ValueError(
            f"{SAT_PREFIX}{SAT_GATE_KEY} has shape {tuple(gate.shape)}, but the checkpoint has {num_layers} transformer "
            f"layers: expected shape ({num_layers},), one gate per layer. Nothing was written; the checkpoint is "
            "inconsistent (gates from another model?)."
        )


def _expected_shapes(model_config: dict) -> tuple[dict, dict[str, torch.Size]]:
    """The complete config diffusers fills in and the state-dict shapes of that model, without allocating weights."""
    from accelerate import init_empty_weights
    from diffusers import CogVideoXTransformer3DModel

    try:
        with init_empty_weights():
            skeleton = CogVideoXTransformer3DModel.from_config(model_config)
    except (ValueError, TypeError) as error:
        raise ValueError(f"The inferred transformer config is invalid ({error}). Pass --config to fix it.") from error
    expected = {k: v.shape for k, v in skeleton.state_dict().items()}
    return {k: v for k, v in skeleton.config.items() if not k.startswith("_")}, expected


# --- the plan ---------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """Which SAT tensor becomes which diffusers tensor: computed from shapes only, before any data is read."""

    sources: dict[str, tuple[str, _Rule, int]]  # diffusers key -> (SAT key, rule, part index)
    dropped: list[str]


def _route(sat_keys: list[str], expected: dict[str, torch.Size], shapes: dict[str, torch.Size]):
    """Send each SAT key through its rule: (diffusers key -> source, produced shapes, dropped keys, unmatched keys)."""
    sources, produced_shapes, dropped, unexpected = {}, {}, [], []
    for key in sat_keys:
        module, _, param = key.rpartition(".")
        found = _match_sat(module)
        if found is None:
            (dropped if key in _FIXED_TABLES else unexpected).append(key)
            continue
        rule, index = found
        targets = [(name.replace("{i}", index) if index is not None else name) + "." + param for name in rule.diffusers]
        if key in _FIXED_TABLES and not all(t in expected for t in targets):
            dropped.append(key)  # diffusers recomputes this table
            continue
        fake = torch.empty(shapes[key], device="meta")
        for j, (target, part) in enumerate(zip(targets, rule.split(fake))):
            sources[target] = (key, rule, j)
            produced_shapes[target] = part.shape
    return sources, produced_shapes, dropped, unexpected


def _plan(sat_keys: list[str], expected: dict[str, torch.Size], shapes: dict[str, torch.Size]) -> _Plan:
    """The plan, or one error listing every missing, unexpected and mis-shaped key."""
    sources, produced_shapes, dropped, unexpected = _route(sat_keys, expected, shapes)
    missing = sorted(set(expected) - set(sources))
    unexpected += sorted(sources[k][0] for k in set(sources) - set(expected))
    mismatched = sorted(
        f"{SAT_PREFIX}{sources[k][0]} -> {k}: {tuple(produced_shapes[k])} vs {tuple(expected[k])} expected"
        for k in set(sources) & set(expected) if produced_shapes[k] != expected[k]
    )
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): " + ", ".join(dict.fromkeys(_sat_name_for(k) for k in missing)))
    if unexpected:
        problems.append(f"unexpected keys ({len(set(unexpected))}): " + ", ".join(SAT_PREFIX + k for k in sorted(set(unexpected))))
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): " + "; ".join(mismatched))
    if problems:
        raise ValueError(
            "The SAT checkpoint does not match a CogVideoXTransformer3DModel with the inferred config: "
            + " | ".join(problems)
            + ". Nothing was written. If the config is wrong (text length, sample size, patch size), pass --config "
            "with a diffusers transformer config.json; if keys are missing, the checkpoint is incomplete."
        )
    return _Plan(sources, dropped)


# --- writing ----------------------------------------------------------------------------------------------------


def _write_transformer(folder: Path, model_config: dict, plan: _Plan, state: dict[str, torch.Tensor],
                       expected: dict[str, torch.Size], dtype: torch.dtype, max_shard_size: int | str) -> None:
    """Write config.json and the safetensors shards, materialising one shard of tensors at a time."""
    import diffusers
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    header = {"_class_name": "CogVideoXTransformer3DModel", "_diffusers_version": diffusers.__version__}
    with open(folder / "config.json", "w") as handle:
        json.dump({**header, **model_config}, handle, indent=2)
    meta = {k: torch.empty(expected[k], dtype=dtype, device="meta") for k in plan.sources}
    split = split_torch_state_dict_into_shards(
        meta, filename_pattern="diffusion_pytorch_model{suffix}.safetensors", max_shard_size=max_shard_size
    )
    for filename, names in split.filename_to_tensors.items():
        shard = {}
        for name in names:
            sat_key, rule, part = plan.sources[name]
            tensor = rule.split(state[sat_key])[part].to(dtype).contiguous()
            if rule.split is _split_qkv and state[sat_key].dtype == dtype:
                tensor = tensor.clone()  # q, k, v views share one storage, which safetensors refuses to save
            shard[name] = tensor
        save_file(shard, str(folder / filename), metadata={"format": "pt"})
        del shard
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        with open(folder / "diffusion_pytorch_model.safetensors.index.json", "w") as handle:
            json.dump(index, handle, indent=2)


def _copy_base_pipeline(base: str, staging: Path) -> None:
    """Every component of `base` except the transformer (and any gates), into `staging`."""
    local = Path(base)
    skip = {"transformer", GATES_SUBFOLDER}
    if local.exists():
        if not (local / "model_index.json").is_file():
            raise ValueError(
                f"--base {base!r} is a folder without model_index.json, so it is not a diffusers pipeline folder. "
                "Pass a CogVideoX pipeline folder or Hub id (e.g. THUDM/CogVideoX-2b)."
            )
        for item in local.iterdir():
            if item.name in skip or item.name.startswith("."):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
    else:
        from huggingface_hub import snapshot_download

        try:
            ignore = ["transformer/*", f"{GATES_SUBFOLDER}/*", "*.md", ".gitattributes"]
            snapshot_download(base, local_dir=staging, ignore_patterns=ignore)
        except Exception as error:  # noqa: BLE001 - offline, no such repo, gated repo: one clear message
            raise ValueError(
                f"--base {base!r}: not a local folder and could not be downloaded from the Hub ({type(error).__name__}: "
                f"{error}). Pass a local pipeline folder, or a reachable Hub id such as THUDM/CogVideoX-2b."
            ) from error
        shutil.rmtree(staging / ".cache", ignore_errors=True)
    model_index = json.loads((staging / "model_index.json").read_text())
    if "CogVideoX" not in str(model_index.get("_class_name")) or "transformer" not in model_index:
        raise ValueError(
            f"--base {base!r} is a {model_index.get('_class_name')} without a CogVideoX transformer. "
            "Pass a CogVideoX pipeline (e.g. THUDM/CogVideoX-2b)."
        )


def _write_gates(folder: Path, gate: torch.Tensor, base: str | None, sat_path, variant: str) -> None:
    """The SAT ``learnable_gating`` vector as a RepVideo gates folder, its model card naming the source."""
    gates = RepVideoGates(num_blocks=len(gate), window=SAT_WINDOW, model_family="CogVideoX",
                          base_model=base if base and not Path(base).exists() else None)
    with torch.no_grad():
        gates.gate.copy_(gate.float())
    gates.save_pretrained(
        folder,
        model_card_text=(
            f"\n## Source\n\nConverted with `repvideo convert` from the SwissArmyTransformer checkpoint "
            f"`{Path(sat_path)}` ({variant}; gates from `{SAT_PREFIX}{SAT_GATE_KEY}`). The official RepVideo weights "
            "are [`Vchitect/RepVideo`](https://huggingface.co/Vchitect/RepVideo).\n"
        ),
    )


# --- the entry point --------------------------------------------------------------------------------------------


def convert_sat_checkpoint(
    sat_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    base: str | None = None,
    dtype: torch.dtype | str | None = None,
    config: str | os.PathLike | dict | None = None,
    overwrite: bool = False,
    allow_unsafe_pickle: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> ConversionResult:
    r"""Convert a RepVideo SAT checkpoint into diffusers: ``out_dir/transformer/`` + ``out_dir/repvideo/`` (gates).

    Args:
        sat_path: SAT checkpoint folder (``latest`` + ``<iteration>/mp_rank_00_model_states.pt``) or a ``.pt`` file.
        out_dir: output folder; must not exist or be empty unless ``overwrite=True``. Written atomically.
        base: a CogVideoX pipeline folder or Hub id (e.g. ``"THUDM/CogVideoX-2b"``); its other components (VAE, text
            encoder, tokenizer, scheduler) are copied so ``out_dir`` is a complete pipeline folder.
        dtype: ``torch.float16`` / ``"fp16"``, ``"bf16"``, ``"fp32"``; default: the checkpoint's own dtype.
        config: a diffusers transformer ``config.json`` (path or dict) overriding the inferred config, e.g. for the
            text length. Without it, fields no shape determines come from the base pipeline, else the defaults.
        allow_unsafe_pickle: load checkpoints that pickle Python objects (only for trusted files).
        max_shard_size: safetensors shard size; peak memory is about one shard besides the mapped checkpoint.

    Raises:
        `ValueError` / `FileNotFoundError`: unreadable file, missing or unexpected keys (listed), wrong gate length,
        unsupported variant, non-empty ``out_dir``. Nothing is written in any of these cases.

    Example:
        ```python
        >>> import tempfile, repvideo_diffusers
        >>> from diffusers import CogVideoXPipeline
        >>> from repvideo_diffusers.convert import convert_sat_checkpoint, export_sat
        >>> from repvideo_diffusers.tiny import build_tiny_transformer, tiny_pipeline_path

        >>> work = tempfile.mkdtemp()
        >>> transformer = build_tiny_transformer()
        >>> gates = repvideo_diffusers.RepVideoGates(num_blocks=4, model_family="CogVideoX")
        >>> _ = export_sat(transformer, gates, f"{work}/sat")
        >>> result = convert_sat_checkpoint(f"{work}/sat", f"{work}/pipe", base=str(tiny_pipeline_path()))
        >>> pipe = CogVideoXPipeline.from_pretrained(f"{work}/pipe")
        >>> pipe.enable_repvideo().gate.tolist()
        [0.5, 0.5, 0.5, 0.5]

        ```
    """
    started = time.perf_counter()
    dtype = parse_dtype(dtype)
    max_shard_size = parse_shard_size(max_shard_size)
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; the converted model is a folder. Choose a folder path "
                         "(--overwrite replaces folders only).")
    check_new_folder(out_dir, overwrite)  # refuse a non-empty --out before the (slow) load
    explicit_config = read_config_file(config)
    state = _read_transformer_state(sat_path, allow_unsafe_pickle)
    gate = state.pop(SAT_GATE_KEY, None)
    shapes = {k: v.shape for k, v in state.items()}
    model_config, variant = _infer_config(shapes, explicit_config, base)
    num_layers = model_config["num_layers"]
    _check_gate(gate, num_layers)
    model_config, expected = _expected_shapes(model_config)
    plan = _plan(list(state), expected, shapes)
    dtype = dtype or state[FIRST_QKV_KEY].dtype

    with staged_folder(out_dir, overwrite=overwrite) as staging:
        if base is not None:
            _copy_base_pipeline(base, staging)
        _write_transformer(staging / "transformer", model_config, plan, state, expected, dtype, max_shard_size)
        _write_gates(staging / GATES_SUBFOLDER, gate, base, sat_path, variant)
    return ConversionResult(
        out_dir=Path(out_dir), variant=variant, num_layers=num_layers, gates=gate.float().tolist(), dtype=dtype,
        pipeline=base is not None, seconds=time.perf_counter() - started,
    )

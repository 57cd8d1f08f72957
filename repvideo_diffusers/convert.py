"""Convert RepVideo checkpoints between SwissArmyTransformer (SAT) and diffusers: ``repvideo convert`` / ``export-sat``.

The official RepVideo model (Hub ``Vchitect/RepVideo``) is a CogVideoX-2B checkpoint in SAT layout whose transformer
carries one learned gate per block (``transformer.learnable_gating``). diffusers' own SAT script loads strictly and
knows no rule for that gate, so it cannot convert it. This module can:

* ``convert_sat_checkpoint``: SAT folder or ``.pt`` file -> ``transformer/`` (diffusers, safetensors) + ``repvideo/``
  (our gates), optionally completed into a whole pipeline folder from a base pipeline.
* ``export_sat``: a diffusers ``CogVideoXTransformer3DModel`` + gates -> the SAT layout the official code loads.

Both directions read one table, ``_RULES``: each SAT module maps to one or more diffusers modules, by a plain copy,
by splitting the fused q/k/v projection, or by regrouping the twelve adaLN chunks. The transformer config is read off
the tensor shapes; what shapes cannot tell (text length, sample size) comes from the variant defaults, the base
pipeline's transformer config, or ``config=``.

Conversion is strict (missing or unexpected keys raise an error that lists them, before anything is written) and
memory-lean: the SAT file is memory-mapped and the output is written shard by shard, so at most one shard of new
tensors exists at a time besides the mapped file.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from diffusers.utils import logging

logger = logging.get_logger(__name__)

SAT_PREFIX = "model.diffusion_model."
SAT_GATE_KEY = "transformer.learnable_gating"
SAT_MODEL_FILE = "mp_rank_00_model_states.pt"
# The official code resets the feature cache after every 6th block, hard-coded (`l % 6 == 0`).
SAT_WINDOW = 6
# Other parts of a SAT engine checkpoint (VAE, text encoder): taken from the base pipeline instead.
_OTHER_COMPONENT_PREFIXES = ("first_stage_model.", "conditioner.")
# Fixed tables and SAT leftovers that diffusers recomputes or does not have: dropped unless the diffusers model holds
# them as weights (the learned position table of CogVideoX-5B-I2V).
_FIXED_TABLES = (
    "mixins.pos_embed.pos_embedding",
    "mixins.pos_embed.freqs_sin",
    "mixins.pos_embed.freqs_cos",
    "transformer.word_embeddings.weight",
    "transformer.position_embeddings.weight",
)
# SAT modules that have no diffusers CogVideoX counterpart, with the fix to name in the error.
_UNSUPPORTED_MODULES = {
    "mixins.lora": "a LoRA mixin: merge the LoRA into the base weights in SAT first",
    "mixins.swiglu": "a SwiGLU MLP, which diffusers' CogVideoX blocks do not have",
    "label_emb": "a class-label embedding (class-conditional model), which diffusers' CogVideoX does not have",
}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DEFAULT_MAX_SHARD_SIZE = "2GB"


# --------------------------------------------------------------------------------------------------------------------
# The key map, both directions
# --------------------------------------------------------------------------------------------------------------------


def _split_copy(tensor: torch.Tensor) -> list[torch.Tensor]:
    return [tensor]


def _split_qkv(tensor: torch.Tensor) -> list[torch.Tensor]:
    return list(tensor.chunk(3, dim=0))  # q, k, v stacked on the output dimension


def _split_adaln(tensor: torch.Tensor) -> list[torch.Tensor]:
    # SAT's 12 chunks: shift/scale/gate for (video attn, video mlp, text attn, text mlp). diffusers' norm1 holds the
    # attention halves (video + text), norm2 the MLP halves.
    c = tensor.chunk(12, dim=0)
    return [torch.cat(c[0:3] + c[6:9]), torch.cat(c[3:6] + c[9:12])]


def _merge_copy(parts: list[torch.Tensor]) -> torch.Tensor:
    return parts[0]


def _merge_qkv(parts: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat(parts, dim=0)


def _merge_adaln(parts: list[torch.Tensor]) -> torch.Tensor:
    norm1, norm2 = (p.chunk(6, dim=0) for p in parts)
    return torch.cat(norm1[0:3] + norm2[0:3] + norm1[3:6] + norm2[3:6], dim=0)


@dataclass(frozen=True)
class _Rule:
    sat: str  # SAT module name ("{i}" = block index), without the `model.diffusion_model.` prefix
    diffusers: tuple[str, ...]  # diffusers module names it becomes
    split: Callable[[torch.Tensor], list[torch.Tensor]] = _split_copy
    merge: Callable[[list[torch.Tensor]], torch.Tensor] = _merge_copy

    def _regex(self, text: str) -> re.Pattern:
        return re.compile("^" + re.escape(text).replace(r"\{i\}", r"(\d+)") + "$")


_RULES: tuple[_Rule, ...] = (
    _Rule("transformer.layers.{i}.attention.query_key_value",
          ("transformer_blocks.{i}.attn1.to_q", "transformer_blocks.{i}.attn1.to_k", "transformer_blocks.{i}.attn1.to_v"),
          _split_qkv, _merge_qkv),
    _Rule("transformer.layers.{i}.attention.dense", ("transformer_blocks.{i}.attn1.to_out.0",)),
    _Rule("transformer.layers.{i}.input_layernorm", ("transformer_blocks.{i}.norm1.norm",)),
    _Rule("transformer.layers.{i}.post_attention_layernorm", ("transformer_blocks.{i}.norm2.norm",)),
    _Rule("transformer.layers.{i}.mlp.dense_h_to_4h", ("transformer_blocks.{i}.ff.net.0.proj",)),
    _Rule("transformer.layers.{i}.mlp.dense_4h_to_h", ("transformer_blocks.{i}.ff.net.2",)),
    _Rule("mixins.adaln_layer.adaLN_modulations.{i}.1",
          ("transformer_blocks.{i}.norm1.linear", "transformer_blocks.{i}.norm2.linear"), _split_adaln, _merge_adaln),
    _Rule("mixins.adaln_layer.query_layernorm_list.{i}", ("transformer_blocks.{i}.attn1.norm_q",)),
    _Rule("mixins.adaln_layer.key_layernorm_list.{i}", ("transformer_blocks.{i}.attn1.norm_k",)),
    _Rule("transformer.final_layernorm", ("norm_final",)),
    _Rule("time_embed.0", ("time_embedding.linear_1",)),
    _Rule("time_embed.2", ("time_embedding.linear_2",)),
    _Rule("ofs_embed.0", ("ofs_embedding.linear_1",)),  # CogVideoX1.5-5B-I2V
    _Rule("ofs_embed.2", ("ofs_embedding.linear_2",)),
    _Rule("mixins.patch_embed.proj", ("patch_embed.proj",)),
    _Rule("mixins.patch_embed.text_proj", ("patch_embed.text_proj",)),
    _Rule("mixins.pos_embed", ("patch_embed",)),  # `pos_embedding`: learned only in CogVideoX-5B-I2V
    _Rule("mixins.final_layer.norm_final", ("norm_out.norm",)),
    _Rule("mixins.final_layer.linear", ("proj_out",)),
    _Rule("mixins.final_layer.adaLN_modulation.1", ("norm_out.linear",)),
)
_SAT_PATTERNS = [(rule, rule._regex(rule.sat)) for rule in _RULES]
_DIFFUSERS_PATTERNS = [(rule, j, rule._regex(name)) for rule in _RULES for j, name in enumerate(rule.diffusers)]


def _match_sat(module: str) -> tuple[_Rule, str | None] | None:
    for rule, pattern in _SAT_PATTERNS:
        found = pattern.match(module)
        if found:
            return rule, (found.group(1) if found.groups() else None)
    return None


def _sat_name_for(diffusers_key: str) -> str:
    """The SAT key that provides a diffusers key (for error messages)."""
    module, _, param = diffusers_key.rpartition(".")
    for rule, _j, pattern in _DIFFUSERS_PATTERNS:
        found = pattern.match(module)
        if found:
            sat = rule.sat.replace("{i}", found.group(1)) if found.groups() else rule.sat
            return f"{SAT_PREFIX}{sat}.{param}"
    return f"(no SAT key maps to {diffusers_key})"


# --------------------------------------------------------------------------------------------------------------------
# Reading a SAT checkpoint
# --------------------------------------------------------------------------------------------------------------------


def resolve_sat_file(sat_path: str | os.PathLike) -> Path:
    """The model-states file of a SAT checkpoint folder (``latest`` + ``<iteration>/mp_rank_00_model_states.pt``) or
    the given ``.pt`` file itself."""
    path = Path(sat_path)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(
            f"SAT checkpoint {str(path)!r} does not exist. Pass a SAT checkpoint folder (with a 'latest' file and "
            f"'<iteration>/{SAT_MODEL_FILE}') or a single .pt file."
        )
    latest = path / "latest"
    if not latest.is_file() and len(nested := sorted(path.glob("*/latest"))) == 1:
        latest, path = nested[0], nested[0].parent  # a download folder that holds the checkpoint folder
    if latest.is_file():
        iteration = latest.read_text().strip()
        candidate = path / iteration / SAT_MODEL_FILE
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(
            f"{str(latest)!r} names iteration {iteration!r}, but {str(candidate)!r} does not exist "
            f"(found {sorted(p.name for p in path.iterdir())}). Fix 'latest' or point at the .pt file directly."
        )
    found = sorted(path.glob(f"*/{SAT_MODEL_FILE}")) + sorted(path.glob(SAT_MODEL_FILE))
    if len(found) == 1:
        return found[0]
    if len(list(path.glob("**/mp_rank_0[1-9]_model_states.pt"))):
        raise ValueError(
            f"{str(path)!r} holds a model-parallel SAT checkpoint (several mp_rank_* files). Only single-rank "
            f"checkpoints ({SAT_MODEL_FILE}) are supported: merge the ranks in SAT first."
        )
    raise FileNotFoundError(
        f"{str(path)!r} is not a SAT checkpoint folder: expected a 'latest' file and '<iteration>/{SAT_MODEL_FILE}', "
        f"found {sorted(p.name for p in path.iterdir())}{' (several candidates)' if found else ''}. "
        "Point --sat at the checkpoint folder or at the .pt file."
    )


def load_sat_state_dict(sat_path: str | os.PathLike, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The flat state dict of a SAT checkpoint (under ``module``, ``model`` or ``state_dict``), memory-mapped.

    Loads with ``weights_only=True``: a checkpoint that also pickles Python objects (training args, optimizer
    classes) is refused with an error naming the object, unless ``allow_unsafe_pickle=True`` (only for files you
    trust: unpickling can run code).
    """
    import argparse as _argparse

    file = resolve_sat_file(sat_path)

    def _load(mmap: bool, weights_only: bool):
        if weights_only:
            # argparse.Namespace (SAT's saved args) is plain data: safe to allow.
            with torch.serialization.safe_globals([_argparse.Namespace]):
                return torch.load(file, map_location="cpu", mmap=mmap, weights_only=True)
        return torch.load(file, map_location="cpu", mmap=mmap, weights_only=False)

    try:
        try:
            saved = _load(mmap=True, weights_only=not allow_unsafe_pickle)
        except RuntimeError as error:
            if "_use_new_zipfile_serialization" not in str(error):
                raise
            # Legacy (pre-zip) torch files cannot be memory-mapped: read them whole.
            logger.warning(f"{file} is a legacy torch file that cannot be memory-mapped; loading it into memory.")
            saved = _load(mmap=False, weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{str(file)!r} pickles Python objects that torch's safe loader refuses ({str(error).splitlines()[0]}). "
            "If you trust this file, pass --allow-unsafe-pickle (Python: allow_unsafe_pickle=True); unpickling an "
            "untrusted file can run arbitrary code."
        ) from error
    except Exception as error:  # noqa: BLE001 - torch raises many types for damaged files; all mean the same here
        raise ValueError(
            f"Could not read SAT checkpoint {str(file)!r}: {str(error).splitlines()[0] if str(error) else type(error).__name__}. "
            "The file is corrupt, truncated or not a torch checkpoint; download or copy it again."
        ) from error

    state = saved
    for key in ("module", "model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        found = sorted(saved)[:10] if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(
            f"{str(file)!r} holds no state dict of tensors under 'module', 'model' or 'state_dict' (found {found}). "
            "Point at a SAT model-states file."
        )
    return state


# --------------------------------------------------------------------------------------------------------------------
# SAT -> diffusers
# --------------------------------------------------------------------------------------------------------------------

# Facts shapes cannot tell, per CogVideoX generation (1.0: 2B / 5B / 5B-I2V, 1.5: 5B / 5B-I2V).
_GENERATION_DEFAULTS = {
    "1.0": {"sample_height": 60, "sample_width": 90, "sample_frames": 49, "patch_size_t": None},
    "1.5": {"sample_height": 300, "sample_width": 300, "sample_frames": 81, "patch_size": 2, "patch_size_t": 2},
}
# Config fields that no tensor shape determines: taken from the base pipeline's transformer when there is one.
_UNSHAPED_FIELDS = (
    "max_text_seq_length", "sample_height", "sample_width", "sample_frames", "temporal_compression_ratio",
    "spatial_interpolation_scale", "temporal_interpolation_scale", "norm_eps", "activation_fn",
    "timestep_activation_fn", "flip_sin_to_cos", "freq_shift",
)


def _transformer_init_fields() -> set[str]:
    import inspect

    from diffusers import CogVideoXTransformer3DModel

    return set(inspect.signature(CogVideoXTransformer3DModel.__init__).parameters) - {"self"}


def _read_config_file(config: str | os.PathLike | dict | None) -> dict:
    if config is None:
        return {}
    if isinstance(config, dict):
        values = dict(config)
    else:
        path = Path(config)
        if path.is_dir():
            path = path / "config.json" if (path / "config.json").is_file() else path / "transformer" / "config.json"
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(
                f"--config {str(config)!r}: no such file. Pass a diffusers transformer config.json."
            ) from None
        except ValueError as error:
            raise ValueError(f"--config {str(config)!r} is not valid JSON ({error}). Pass a diffusers config.json.") from None
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    unknown = sorted(set(values) - _transformer_init_fields())
    if unknown:
        raise ValueError(
            f"The transformer config has fields CogVideoXTransformer3DModel does not take: {unknown}. "
            "Pass a CogVideoXTransformer3DModel config.json (e.g. transformer/config.json of a CogVideoX pipeline)."
        )
    return values


def _check_supported(keys: set[str]) -> None:
    for key in sorted(keys):
        for module, why in _UNSUPPORTED_MODULES.items():
            if key == module or key.startswith(module + "."):
                raise ValueError(
                    f"Unsupported CogVideoX variant: the checkpoint has {SAT_PREFIX}{key}, {why}. "
                    "Supported: CogVideoX-2B / 5B / 5B-I2V and CogVideoX1.5-5B / 5B-I2V transformers with gates."
                )
    if "transformer.layers.0.attention.query_key_value.weight" not in keys:
        raise ValueError(
            "Unsupported checkpoint: no CogVideoX transformer found (expected keys like "
            f"'{SAT_PREFIX}transformer.layers.0.attention.query_key_value.weight'; found e.g. {sorted(keys)[:5]}). "
            "Pass the SAT transformer checkpoint (not the VAE or the text encoder)."
        )


def infer_transformer_config(shapes: dict[str, torch.Size], config: dict | None = None,
                             base_config: dict | None = None) -> tuple[dict, str]:
    """CogVideoXTransformer3DModel init arguments read off SAT tensor shapes, and a variant name.

    Precedence: variant defaults < base pipeline's transformer config (fields no shape determines) < shapes < `config`.
    """
    _check_supported(set(shapes))
    layer_ids = {int(m.group(1)) for k in shapes if (m := re.match(r"transformer\.layers\.(\d+)\.attention\.query_key_value\.weight$", k))}
    num_layers = max(layer_ids) + 1
    inner = shapes["transformer.layers.0.attention.query_key_value.weight"][1]
    patch = shapes.get("mixins.patch_embed.proj.weight")
    if patch is None:
        raise ValueError(f"The checkpoint lacks {SAT_PREFIX}mixins.patch_embed.proj.weight, so it is no CogVideoX transformer.")
    generation = "1.0" if len(patch) == 4 else "1.5"
    values: dict[str, Any] = dict(_GENERATION_DEFAULTS[generation])
    values.update({k: v for k, v in (base_config or {}).items() if k in _UNSHAPED_FIELDS})
    head_dim_shape = shapes.get("mixins.adaln_layer.query_layernorm_list.0.weight")
    head_dim = head_dim_shape[0] if head_dim_shape is not None else (config or {}).get("attention_head_dim", 64)
    rotary = "mixins.pos_embed.freqs_sin" in shapes or "mixins.pos_embed.freqs_cos" in shapes or generation == "1.5"
    learned_positions = rotary and "mixins.pos_embed.pos_embedding" in shapes
    final_out = shapes["mixins.final_layer.linear.weight"][0]
    values.update(
        num_layers=num_layers,
        attention_head_dim=head_dim,
        num_attention_heads=inner // head_dim,
        time_embed_dim=shapes["time_embed.0.weight"][0],
        text_embed_dim=shapes["mixins.patch_embed.text_proj.weight"][1],
        patch_bias="mixins.patch_embed.proj.bias" in shapes,
        attention_bias="transformer.layers.0.attention.query_key_value.bias" in shapes,
        norm_elementwise_affine="transformer.layers.0.input_layernorm.weight" in shapes,
        use_rotary_positional_embeddings=rotary,
        use_learned_positional_embeddings=learned_positions,
        ofs_embed_dim=shapes["ofs_embed.0.weight"][0] if "ofs_embed.0.weight" in shapes else None,
    )
    if generation == "1.0":
        p = patch[-1]
        values.update(patch_size=p, in_channels=patch[1], out_channels=final_out // (p * p))
    else:
        p, pt = (config or {}).get("patch_size", values["patch_size"]), (config or {}).get("patch_size_t", values["patch_size_t"])
        values.update(in_channels=patch[1] // (p * p * pt), out_channels=final_out // (p * p * pt))
    mlp = shapes.get("transformer.layers.0.mlp.dense_h_to_4h.weight")
    if mlp is not None and mlp[0] != 4 * inner:
        raise ValueError(
            f"Unsupported CogVideoX variant: MLP width {mlp[0]} is not 4 x {inner}, the only width diffusers' "
            "CogVideoX blocks have."
        )
    values.update(config or {})
    positions = "rotary" if rotary else "sinusoidal"
    if learned_positions:
        positions += " + learned"
    variant = f"CogVideoX{'' if generation == '1.0' else '1.5'} ({num_layers} layers, width {inner}, {positions} positions"
    variant += ", image-to-video)" if values.get("in_channels", 16) == 2 * values.get("out_channels", 16) else ")"
    return values, variant


@dataclass
class _Plan:
    """Which SAT tensor becomes which diffusers tensor: computed from shapes only, before any data is read."""

    sources: dict[str, tuple[str, _Rule, int]]  # diffusers key -> (SAT key, rule, part index)
    dropped: list[str]
    skipped_components: list[str]


def _plan(sat_keys: list[str], expected: dict[str, torch.Size], shapes: dict[str, torch.Size]) -> _Plan:
    sources, dropped, skipped, unexpected = {}, [], [], []
    produced_shapes = {}
    for key in sat_keys:
        module, _, param = key.rpartition(".")
        found = _match_sat(module)
        if found is None:
            if key in _FIXED_TABLES:
                dropped.append(key)
            else:
                unexpected.append(key)
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
    return _Plan(sources, dropped, skipped)


def _write_transformer(folder: Path, model_config: dict, plan: _Plan, state: dict[str, torch.Tensor],
                       expected: dict[str, torch.Size], dtype: torch.dtype, max_shard_size: int | str) -> None:
    """Write config.json and the safetensors shards, materialising one shard of tensors at a time."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    with open(folder / "config.json", "w") as handle:
        json.dump({"_class_name": "CogVideoXTransformer3DModel", **_diffusers_version(), **model_config}, handle, indent=2)
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


def _diffusers_version() -> dict:
    import diffusers

    return {"_diffusers_version": diffusers.__version__}


def _copy_base_pipeline(base: str, staging: Path) -> None:
    """Every component of `base` except the transformer (and any gates), into `staging`."""
    local = Path(base)
    skip = {"transformer", "repvideo"}
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
            snapshot_download(base, local_dir=staging, ignore_patterns=["transformer/*", "repvideo/*", "*.md", ".gitattributes"])
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


def _base_transformer_config(base: str | None) -> dict:
    if base is None:
        return {}
    local = Path(base) / "transformer" / "config.json"
    if local.is_file():
        return json.loads(local.read_text())
    if Path(base).exists():
        return {}
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(base, "config.json", subfolder="transformer")).read_text())
    except Exception:  # noqa: BLE001 - reported when the base is copied
        return {}


class _AtomicFolder:
    """Write into a hidden temporary folder beside `out`; move it into place only when everything succeeded."""

    def __init__(self, out: str | os.PathLike, overwrite: bool, option: str = "--out"):
        self.out = Path(out)
        if self.out.exists() and (not self.out.is_dir() or any(self.out.iterdir())) and not overwrite:
            raise ValueError(
                f"{option} {str(self.out)!r} already exists and is not empty. Choose a new folder, or pass "
                "--overwrite (Python: overwrite=True) to replace it."
            )

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.partial-", dir=self.out.parent))
        return self.staging

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return False
        old = None
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            self.out.rename(old)
        self.staging.rename(self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        return False


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
    from accelerate import init_empty_weights
    from diffusers import CogVideoXTransformer3DModel

    from .core.gates import GATES_SUBFOLDER, RepVideoGates

    started = time.perf_counter()
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
        dtype = _DTYPES[dtype]
    _AtomicFolder(out_dir, overwrite)  # refuse a non-empty --out before the (slow) load
    explicit_config = _read_config_file(config)
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
    gate = state.pop(SAT_GATE_KEY, None)
    shapes = {k: v.shape for k, v in state.items()}
    base_config = _base_transformer_config(base)
    model_config, variant = infer_transformer_config(shapes, explicit_config, base_config)
    num_layers = model_config["num_layers"]
    differing = sorted(k for k in ("num_layers", "num_attention_heads", "in_channels", "use_rotary_positional_embeddings")
                       if k in base_config and base_config[k] != model_config.get(k))
    if differing:
        # Not an error: a fine-tune may reuse another model's VAE and text encoder. But usually it is a wrong --base.
        logger.warning(f"--base {base!r} has a transformer that differs from the checkpoint in {differing}: check that "
                       "its VAE and text encoder are the ones this checkpoint was trained with.")
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
    try:
        with init_empty_weights():
            skeleton = CogVideoXTransformer3DModel.from_config(model_config)
    except (ValueError, TypeError) as error:
        raise ValueError(f"The inferred transformer config is invalid ({error}). Pass --config to fix it.") from error
    expected = {k: v.shape for k, v in skeleton.state_dict().items()}
    model_config = {k: v for k, v in skeleton.config.items() if not k.startswith("_")}
    del skeleton
    plan = _plan(list(state), expected, shapes)
    plan.skipped_components = skipped
    source_dtype = state["transformer.layers.0.attention.query_key_value.weight"].dtype
    dtype = dtype or source_dtype

    with _AtomicFolder(out_dir, overwrite) as staging:
        if base is not None:
            _copy_base_pipeline(base, staging)
        _write_transformer(staging / "transformer", model_config, plan, state, expected, dtype, max_shard_size)
        gates = RepVideoGates(num_blocks=num_layers, window=SAT_WINDOW, model_family="CogVideoX",
                              base_model=base if base and not Path(base).exists() else None)
        with torch.no_grad():
            gates.gate.copy_(gate.float())
        source = str(Path(sat_path))
        gates.save_pretrained(
            staging / GATES_SUBFOLDER,
            model_card_text=(
                f"\n## Source\n\nConverted with `repvideo convert` from the SwissArmyTransformer checkpoint `{source}` "
                f"({variant}; gates from `{SAT_PREFIX}{SAT_GATE_KEY}`). The official RepVideo weights are "
                "[`Vchitect/RepVideo`](https://huggingface.co/Vchitect/RepVideo).\n"
            ),
        )
    return ConversionResult(
        out_dir=Path(out_dir), variant=variant, num_layers=num_layers, gates=gate.float().tolist(), dtype=dtype,
        pipeline=base is not None, seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------------------------------------------------
# diffusers -> SAT
# --------------------------------------------------------------------------------------------------------------------


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


def _load_transformer_and_gates(transformer, gates):
    from diffusers import CogVideoXTransformer3DModel

    from .core.gates import GATES_SUBFOLDER, RepVideoGates, load_gates

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
    return model, gates


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
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}.")
        dtype = _DTYPES[dtype]
    if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
        raise ValueError(f"iteration must be a non-negative integer, got {iteration!r}.")
    _AtomicFolder(out_dir, overwrite)
    model, gates = _load_transformer_and_gates(transformer, gates)
    num_layers = len(model.transformer_blocks)
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
    dtype = dtype or model.dtype
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
    config = model.config
    if not config.use_rotary_positional_embeddings:
        # SAT's Basic3DPositionEmbeddingMixin: zeros for the text tokens, then the 3-D sin-cos table. diffusers keeps
        # exactly this joint table as its (non-persistent) buffer.
        sat["mixins.pos_embed.pos_embedding"] = model.patch_embed.pos_embedding.detach()
    elif config.patch_size_t is None:
        sat.update(_sat_rotary_tables(config))
    else:
        logger.warning("CogVideoX1.5 rotary tables are not exported: SAT recomputes them (pass --force_inference).")
    sat[SAT_GATE_KEY] = gates.gate.detach()
    module = {SAT_PREFIX + k: v.to(dtype).contiguous() for k, v in sat.items()}
    with _AtomicFolder(out_dir, overwrite) as staging:
        (staging / str(iteration)).mkdir()
        torch.save({"module": module}, staging / str(iteration) / SAT_MODEL_FILE)
        (staging / "latest").write_text(str(iteration))
    return Path(out_dir)

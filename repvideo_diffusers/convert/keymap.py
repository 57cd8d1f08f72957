"""The SAT <-> diffusers key map of the CogVideoX transformer, read by both conversion directions.

Each SAT module maps to one or more diffusers modules (`_Rule`): by a plain copy, by splitting the fused q/k/v
projection, or by regrouping SAT's twelve adaLN chunks into diffusers' ``norm1`` / ``norm2``. ``split`` goes
SAT -> diffusers, ``merge`` is its inverse. Keys here have no ``model.diffusion_model.`` prefix (`SAT_PREFIX`).

Example:
    ```python
    >>> import torch
    >>> from repvideo_diffusers.convert.keymap import _match_sat
    >>> rule, block = _match_sat("transformer.layers.3.attention.query_key_value")
    >>> [name.replace("{i}", block) for name in rule.diffusers]
    ['transformer_blocks.3.attn1.to_q', 'transformer_blocks.3.attn1.to_k', 'transformer_blocks.3.attn1.to_v']
    >>> fused = torch.arange(6.0)
    >>> torch.equal(rule.merge(rule.split(fused)), fused)
    True

    ```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import torch

SAT_PREFIX = "model.diffusion_model."
SAT_GATE_KEY = "transformer.learnable_gating"
# The official code resets the feature cache after every 6th block, hard-coded (`l % 6 == 0`).
SAT_WINDOW = 6
# The key whose presence says "a CogVideoX transformer"; its dtype is the checkpoint's dtype.
FIRST_QKV_KEY = "transformer.layers.0.attention.query_key_value.weight"
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
    """The rule for a SAT module name and its block index (``None`` outside the blocks), or ``None``."""
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


def _check_supported(keys: set[str]) -> None:
    """Refuse SAT modules diffusers' CogVideoX cannot hold, and checkpoints with no CogVideoX transformer at all."""
    for key in sorted(keys):
        for module, why in _UNSUPPORTED_MODULES.items():
            if key == module or key.startswith(module + "."):
                raise ValueError(
                    f"Unsupported CogVideoX variant: the checkpoint has {SAT_PREFIX}{key}, {why}. "
                    "Supported: CogVideoX-2B / 5B / 5B-I2V and CogVideoX1.5-5B / 5B-I2V transformers with gates."
                )
    if FIRST_QKV_KEY not in keys:
        raise ValueError(
            "Unsupported checkpoint: no CogVideoX transformer found (expected keys like "
            f"'{SAT_PREFIX}{FIRST_QKV_KEY}'; found e.g. {sorted(keys)[:5]}). "
            "Pass the SAT transformer checkpoint (not the VAE or the text encoder)."
        )

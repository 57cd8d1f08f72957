"""The ``CogVideoXTransformer3DModel`` config of a SAT checkpoint, read off its tensor shapes.

Shapes give the layer count, widths, channels, patching and position scheme. What no shape tells (text length,
sample size, norm epsilon, ...) comes, in rising precedence, from the CogVideoX generation's defaults, the base
pipeline's transformer config, and an explicit ``config=`` / ``--config``.

Example:
    ```python
    >>> import tempfile
    >>> from repvideo_diffusers import RepVideoGates
    >>> from repvideo_diffusers.convert import SAT_GATE_KEY, SAT_PREFIX, export_sat, load_sat_state_dict
    >>> from repvideo_diffusers.convert.transformer_config import infer_transformer_config
    >>> from repvideo_diffusers.tiny import build_tiny_transformer

    >>> sat = load_sat_state_dict(export_sat(build_tiny_transformer(), RepVideoGates(num_blocks=4), tempfile.mkdtemp()))
    >>> shapes = {k[len(SAT_PREFIX):]: v.shape for k, v in sat.items() if k != SAT_PREFIX + SAT_GATE_KEY}
    >>> config, variant = infer_transformer_config(shapes)
    >>> config["num_attention_heads"], config["attention_head_dim"], variant
    (2, 8, 'CogVideoX (4 layers, width 16, sinusoidal positions)')

    ```
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from .keymap import FIRST_QKV_KEY, SAT_PREFIX, _check_supported

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
# Fields where a base pipeline that differs from the checkpoint most likely is the wrong --base.
_BASE_MISMATCH_FIELDS = ("num_layers", "num_attention_heads", "in_channels", "use_rotary_positional_embeddings")


def _transformer_init_fields() -> set[str]:
    import inspect

    from diffusers import CogVideoXTransformer3DModel

    return set(inspect.signature(CogVideoXTransformer3DModel.__init__).parameters) - {"self"}


def read_config_file(config: str | os.PathLike | dict | None) -> dict:
    """The init arguments in a transformer ``config.json`` (a file, a folder holding one, or a dict), checked."""
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


def base_transformer_config(base: str | None) -> dict:
    """The transformer config of the base pipeline (folder or Hub id), or ``{}`` when there is none to read."""
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


def base_config_differences(base_config: dict, model_config: dict) -> list[str]:
    """The telling fields in which the base pipeline's transformer differs from the checkpoint's."""
    return sorted(k for k in _BASE_MISMATCH_FIELDS if k in base_config and base_config[k] != model_config.get(k))


def _shape_facts(shapes: dict[str, torch.Size], head_dim: int, rotary: bool) -> dict[str, Any]:
    """Config fields that a tensor's presence or shape determines, except patching and channels."""
    inner = shapes[FIRST_QKV_KEY][1]
    return dict(
        attention_head_dim=head_dim,
        num_attention_heads=inner // head_dim,
        time_embed_dim=shapes["time_embed.0.weight"][0],
        text_embed_dim=shapes["mixins.patch_embed.text_proj.weight"][1],
        patch_bias="mixins.patch_embed.proj.bias" in shapes,
        attention_bias="transformer.layers.0.attention.query_key_value.bias" in shapes,
        norm_elementwise_affine="transformer.layers.0.input_layernorm.weight" in shapes,
        use_rotary_positional_embeddings=rotary,
        use_learned_positional_embeddings=rotary and "mixins.pos_embed.pos_embedding" in shapes,
        ofs_embed_dim=shapes["ofs_embed.0.weight"][0] if "ofs_embed.0.weight" in shapes else None,
    )


def _patching_and_channels(patch: torch.Size, final_out: int, generation: str, values: dict, config: dict) -> dict:
    # 1.0 embeds patches with a Conv2d (kernel = patch size); 1.5 with a Linear over flattened 3-D patches, whose
    # patch size the shapes alone cannot separate from the channel count.
    if generation == "1.0":
        p = patch[-1]
        return dict(patch_size=p, in_channels=patch[1], out_channels=final_out // (p * p))
    p, pt = config.get("patch_size", values["patch_size"]), config.get("patch_size_t", values["patch_size_t"])
    return dict(in_channels=patch[1] // (p * p * pt), out_channels=final_out // (p * p * pt))


def _check_mlp_width(shapes: dict[str, torch.Size], inner: int) -> None:
    mlp = shapes.get("transformer.layers.0.mlp.dense_h_to_4h.weight")
    if mlp is not None and mlp[0] != 4 * inner:
        raise ValueError(
            f"Unsupported CogVideoX variant: MLP width {mlp[0]} is not 4 x {inner}, the only width diffusers' "
            "CogVideoX blocks have."
        )


def _variant_name(generation: str, num_layers: int, inner: int, facts: dict, values: dict) -> str:
    """E.g. ``CogVideoX (30 layers, width 1920, sinusoidal positions)``: positions as the shapes say, image-to-video
    from the final channel counts."""
    positions = "rotary" if facts["use_rotary_positional_embeddings"] else "sinusoidal"
    if facts["use_learned_positional_embeddings"]:
        positions += " + learned"
    variant = f"CogVideoX{'' if generation == '1.0' else '1.5'} ({num_layers} layers, width {inner}, {positions} positions"
    return variant + (", image-to-video)" if values.get("in_channels", 16) == 2 * values.get("out_channels", 16) else ")")


def infer_transformer_config(shapes: dict[str, torch.Size], config: dict | None = None,
                             base_config: dict | None = None) -> tuple[dict, str]:
    """CogVideoXTransformer3DModel init arguments read off SAT tensor shapes, and a variant name.

    Precedence: variant defaults < base pipeline's transformer config (fields no shape determines) < shapes < `config`.
    """
    _check_supported(set(shapes))
    config = config or {}
    layer_ids = {int(m.group(1)) for k in shapes
                 if (m := re.match(r"transformer\.layers\.(\d+)\.attention\.query_key_value\.weight$", k))}
    inner = shapes[FIRST_QKV_KEY][1]
    patch = shapes.get("mixins.patch_embed.proj.weight")
    if patch is None:
        raise ValueError(f"The checkpoint lacks {SAT_PREFIX}mixins.patch_embed.proj.weight, so it is no CogVideoX transformer.")
    generation = "1.0" if len(patch) == 4 else "1.5"
    values: dict[str, Any] = dict(_GENERATION_DEFAULTS[generation])
    values.update({k: v for k, v in (base_config or {}).items() if k in _UNSHAPED_FIELDS})
    head_dim_shape = shapes.get("mixins.adaln_layer.query_layernorm_list.0.weight")
    head_dim = head_dim_shape[0] if head_dim_shape is not None else config.get("attention_head_dim", 64)
    rotary = "mixins.pos_embed.freqs_sin" in shapes or "mixins.pos_embed.freqs_cos" in shapes or generation == "1.5"
    num_layers = max(layer_ids) + 1
    facts = _shape_facts(shapes, head_dim, rotary)
    values.update(num_layers=num_layers, **facts)
    values.update(_patching_and_channels(patch, shapes["mixins.final_layer.linear.weight"][0], generation, values, config))
    _check_mlp_width(shapes, inner)
    values.update(config)
    return values, _variant_name(generation, num_layers, inner, facts, values)

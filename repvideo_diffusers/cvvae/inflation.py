"""Initialise a CV-VAE from an image VAE (diffusers ``AutoencoderKL``) by inflating its 2D weights to 3D.

Each 2D kernel goes into the temporal slice that lines up with the *current* frame: the last slice of a
causal convolution (padded with two copies of frame 0 in front), the centre slice of a centred one. The
inflated 3D convolution then computes exactly the 2D convolution frame by frame, so before any training a
single image is encoded to (nearly) the image VAE's latent, which is what the latent regularisation keeps.
Temporal upsamplers, which predict two frames per frame, get the 2D kernel for both (frame repetition);
temporal downsamplers with the kernel in the last slice keep every second frame. ``mode="average"`` instead
spreads the kernel evenly over time (``w / k_t`` in each slice), the other common inflation.

Parameters with no 2D counterpart (the v1 decoder's temporal attention) keep their initialisation, with
``proj_out_t`` zeroed so the untrained temporal branch adds nothing to the residual stream.
The image VAE's ``quant_conv`` / ``post_quant_conv`` (1x1) are folded into the encoder's last and the
decoder's first convolution: exact for ``quant_conv``; for ``post_quant_conv`` the folded bias also reaches
the zero-padded border taps, a small border-only difference.
"""

import logging
import re
from typing import Dict, Optional

import torch

from .layers import VideoConv3d
from .modeling import CVVAEModel
from .modeling_sd3 import CVVAESD3Model

logger = logging.getLogger(__name__)
INFLATION_MODES = ("tail", "average")


def _v1_name(key: str, num_levels: int) -> Optional[str]:
    """diffusers ``AutoencoderKL`` parameter name -> CV-VAE v1 (``ldm``-style) name."""
    rules = [
        (r"^(encoder)\.down_blocks\.(\d+)\.resnets\.(\d+)\.", lambda m: f"{m[1]}.down.{m[2]}.block.{m[3]}."),
        (r"^(encoder)\.down_blocks\.(\d+)\.downsamplers\.0\.", lambda m: f"{m[1]}.down.{m[2]}.downsample."),
        (
            r"^(decoder)\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
            lambda m: f"{m[1]}.up.{num_levels - 1 - int(m[2])}.block.{m[3]}.",
        ),
        (
            r"^(decoder)\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"{m[1]}.up.{num_levels - 1 - int(m[2])}.upsample.",
        ),
        (r"^(\w+)\.mid_block\.resnets\.0\.", lambda m: f"{m[1]}.mid.block_1."),
        (r"^(\w+)\.mid_block\.resnets\.1\.", lambda m: f"{m[1]}.mid.block_2."),
        (r"^(\w+)\.mid_block\.attentions\.0\.group_norm\.", lambda m: f"{m[1]}.mid.attn_1.norm."),
        (r"^(\w+)\.mid_block\.attentions\.0\.to_([qkv])\.", lambda m: f"{m[1]}.mid.attn_1.{m[2]}."),
        (r"^(\w+)\.mid_block\.attentions\.0\.to_out\.0\.", lambda m: f"{m[1]}.mid.attn_1.proj_out."),
        (r"^(\w+)\.conv_norm_out\.", lambda m: f"{m[1]}.norm_out."),
    ]
    for pattern, replace in rules:
        match = re.match(pattern, key)
        if match:
            key = replace(match) + key[match.end() :]
            break
    return key.replace(".conv_shortcut.", ".nin_shortcut.")


def _fold_quant_convs(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    state = dict(state)
    if "quant_conv.weight" in state:
        q, qb = state.pop("quant_conv.weight")[:, :, 0, 0], state.pop("quant_conv.bias")
        w, b = state["encoder.conv_out.weight"], state["encoder.conv_out.bias"]
        state["encoder.conv_out.weight"] = torch.einsum("ok,k...->o...", q, w)
        state["encoder.conv_out.bias"] = q @ b + qb
    if "post_quant_conv.weight" in state:
        p, pb = state.pop("post_quant_conv.weight")[:, :, 0, 0], state.pop("post_quant_conv.bias")
        w, b = state["decoder.conv_in.weight"], state["decoder.conv_in.bias"]
        state["decoder.conv_in.weight"] = torch.einsum("ok...,ki->oi...", w, p)
        state["decoder.conv_in.bias"] = b + torch.einsum("okhw,k->o", w, pb)
    return state


def _inflate_tensor(source: torch.Tensor, target: torch.Tensor, current_slice: int, mode: str) -> torch.Tensor:
    if source.shape == target.shape:
        return source
    if source.dim() == 2 and target.dim() == 4:  # Linear -> 1x1 Conv2d (attention projections)
        return source[:, :, None, None]
    if source.dim() == 4 and target.dim() == 2:
        return source[:, :, 0, 0]
    repeats = target.shape[0] // source.shape[0]
    if repeats > 1:  # temporal upsampler: the same 2D kernel predicts each of its frames
        source = torch.cat([source] * repeats, dim=0)
    if source.dim() == 4 and target.dim() == 5:
        kernel_t = target.shape[2]
        inflated = source.new_zeros(source.shape[:2] + (kernel_t,) + source.shape[2:])
        if mode == "average":
            inflated[:] = (source / kernel_t)[:, :, None]
        else:
            inflated[:, :, min(current_slice, kernel_t - 1)] = source
        source = inflated
    if source.shape != target.shape:
        raise ValueError(f"Cannot inflate a {tuple(source.shape)} weight into {tuple(target.shape)}.")
    return source


def inflate_image_vae(image_vae, variant: str = "v1", mode: str = "tail", **config_overrides):
    """Build a ``CVVAEModel`` (``variant="v1"``) or ``CVVAESD3Model`` (``"sd3"``) from an ``AutoencoderKL``.

    The video VAE gets the image VAE's widths, depth and latent channels; ``config_overrides`` set any other
    config field (e.g. ``en_de_n_frames_a_time``, ``tile_spatial_size``).

    Example:
        >>> import torch
        >>> from diffusers import AutoencoderKL
        >>> image_vae = AutoencoderKL(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
        ...                           up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
        >>> vae = inflate_image_vae(image_vae, tile_spatial_size=None)
        >>> image = torch.rand(1, 3, 32, 32) * 2 - 1
        >>> z_video = vae.encode(image[:, :, None]).latent_dist.mean[:, :, 0]
        >>> z_image = image_vae.encode(image).latent_dist.mean
        >>> bool((z_video - z_image).abs().max() < 1e-3)
        True
    """
    if mode not in INFLATION_MODES:
        raise ValueError(f"Inflation mode must be one of {INFLATION_MODES}; found {mode!r}.")
    cfg = image_vae.config
    channels = list(cfg.block_out_channels)
    if variant == "v1":
        if cfg.norm_num_groups != 32:
            raise ValueError(f"CVVAEModel uses 32 norm groups; the image VAE uses {cfg.norm_num_groups}.")
        if any(c % channels[0] for c in channels):
            raise ValueError(f"Block widths {channels} are not multiples of the first; CVVAEModel needs ch * ch_mult.")
        config = dict(
            ch=channels[0],
            ch_mult=[c // channels[0] for c in channels],
            num_res_blocks=cfg.layers_per_block,
            z_channels=cfg.latent_channels,
            in_channels=cfg.in_channels,
            out_ch=cfg.out_channels,
            scaling_factor=cfg.scaling_factor,
        )
        config.update(config_overrides)
        model = CVVAEModel(**config)
        rename = lambda key: _v1_name(key, len(channels))  # noqa: E731
    elif variant == "sd3":
        config = dict(
            in_channels=cfg.in_channels,
            out_channels=cfg.latent_channels,
            block_out_channels=channels,
            layers_per_block=cfg.layers_per_block,
            norm_num_groups=cfg.norm_num_groups,
            act_fn=cfg.act_fn,
            down_block_types=["DownEncoderBlock3D"] * len(channels),
            up_block_types=["UpDecoderBlock3D"] * len(channels),
        )
        config.update(config_overrides)
        model = CVVAESD3Model(**config)
        rename = lambda key: key  # noqa: E731  (same diffusers-style names)
    else:
        raise ValueError(f"variant must be 'v1' or 'sd3'; found {variant!r}.")

    source = _fold_quant_convs({k: v.detach().float() for k, v in image_vae.state_dict().items()})
    target = model.state_dict()
    current_slice = {}
    for name, module in model.named_modules():
        if isinstance(module, VideoConv3d):
            current_slice[name + ".weight"] = module.temporal_padding[0]
    new_state, unused = {}, []
    for key, value in source.items():
        new_key = rename(key)
        if new_key not in target:
            unused.append(key)
            continue
        new_state[new_key] = _inflate_tensor(value, target[new_key], current_slice.get(new_key, 1), mode)
    if unused:
        raise ValueError(f"Image VAE parameters with no place in {type(model).__name__}: {unused}")
    no_counterpart = sorted(set(target) - set(new_state))
    logger.info("Inflated %d tensors; kept the initialisation of %s", len(new_state), no_counterpart)
    for key in no_counterpart:
        if key.endswith("proj_out_t.weight") or key.endswith("proj_out_t.bias"):
            new_state[key] = torch.zeros_like(target[key])
    model.load_state_dict({**target, **new_state})
    return model

"""Encoder and decoder of CV-VAE SD3 (16 latent channels, SD3 / SD3.5 latent space).

Same "half 3D" design as v1 but with diffusers' block naming (``down_blocks.{i}.resnets.{j}``,
``mid_block.attentions.0``...) and border-replicating padding in the 3D convolutions. The mid-block
attention is diffusers' own ``Attention`` module (so its parameters are ``group_norm``, ``to_q``...),
applied frame by frame, with a processor that runs our SDPA/xformers backend.
"""

from typing import Sequence

import torch
import torch.nn as nn
from diffusers.models.activations import get_activation
from diffusers.models.attention_processor import Attention

from .. import _compat
from .attention import single_head_attention
from .layers import FrameConv2d, batch_to_frames, channels_to_time, conv3x3x3, frames_to_batch
from .vae_v1 import _CheckpointMixin


def _conv(in_channels, out_channels, causal, stride=1):
    # SD3 variant: replicate the border in space and, when not causal, on both ends of time as well.
    return conv3x3x3(in_channels, out_channels, causal, "replicate", "replicate", stride=stride)


class CVVAEAttnProcessor:
    """diffusers attention processor for the VAE mid block: group norm, single/multi-head attention over
    the pixels of a frame, output projection, residual. Runs xformers when it works, else PyTorch SDPA."""

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        residual = hidden_states
        b, c, height, width = hidden_states.shape
        h = attn.group_norm(hidden_states) if attn.group_norm is not None else hidden_states
        h = h.flatten(2).transpose(1, 2)
        q, k, v = attn.to_q(h), attn.to_k(h), attn.to_v(h)
        heads = attn.heads
        if heads > 1:
            q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2).flatten(0, 1) for t in (q, k, v))
        out = single_head_attention(q, k, v)
        if heads > 1:
            out = out.unflatten(0, (b, heads)).transpose(1, 2).flatten(2)
        out = attn.to_out[1](attn.to_out[0](out))
        out = out.transpose(1, 2).reshape(b, c, height, width)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


class FrameAttention(Attention):
    """diffusers ``Attention`` applied to every frame of a 5D video tensor."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if hidden_states.dim() != 5:
            return super().forward(hidden_states)
        frames = frames_to_batch(hidden_states)
        return batch_to_frames(super().forward(frames), hidden_states.shape[0])


class ResnetBlock3D(nn.Module):
    """Pre-norm residual block; 3D first conv, per-frame second conv (half 3D), 1x1 per-frame shortcut."""

    def __init__(self, in_channels, out_channels, groups, eps, act_fn, causal, half_3d):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=eps, affine=True)
        self.conv1 = _conv(in_channels, out_channels, causal)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=eps, affine=True)
        self.dropout = nn.Dropout(0.0)
        if half_3d:
            self.conv2 = FrameConv2d(out_channels, out_channels, 3, padding=1)
        else:
            self.conv2 = _conv(out_channels, out_channels, causal)
        self.nonlinearity = get_activation(act_fn)
        self.conv_shortcut = FrameConv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        h = self.conv2(self.dropout(self.nonlinearity(self.norm2(h))))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class Downsample3D(nn.Module):
    def __init__(self, channels: int, causal: bool, down_time: bool):
        super().__init__()
        self.conv = _conv(channels, channels, causal, stride=2 if down_time else (1, 2, 2))

    def forward(self, x):
        return self.conv(x)


class Upsample3D(nn.Module):
    def __init__(self, channels: int, causal: bool, up_time: bool):
        super().__init__()
        self.time_factor = 2 if up_time else 1
        self.conv = _conv(channels, channels * self.time_factor, causal)

    def forward(self, x):
        x = nn.functional.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        x = channels_to_time(self.conv(x), self.time_factor)
        return x[:, :, 1:] if self.time_factor > 1 else x


class DownEncoderBlock3D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, act_fn, causal, half_3d, add_downsample, down_time):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, groups, 1e-6, act_fn, causal, half_3d)
            for i in range(num_layers)
        )
        self.downsamplers = nn.ModuleList([Downsample3D(out_channels, causal, down_time)]) if add_downsample else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return x


class UpDecoderBlock3D(nn.Module):
    def __init__(self, in_channels, out_channels, num_layers, groups, act_fn, causal, half_3d, add_upsample, up_time):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(in_channels if i == 0 else out_channels, out_channels, groups, 1e-6, act_fn, causal, half_3d)
            for i in range(num_layers)
        )
        self.upsamplers = nn.ModuleList([Upsample3D(out_channels, causal, up_time)]) if add_upsample else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock3D(nn.Module):
    """resnet, (attention, resnet): the SD VAE mid block, attention per frame."""

    def __init__(self, channels, groups, act_fn, causal, half_3d, add_attention=True):
        super().__init__()
        self.resnets = nn.ModuleList(
            ResnetBlock3D(channels, channels, groups, 1e-6, act_fn, causal, half_3d) for _ in range(2)
        )
        attention = None
        if add_attention:
            attention = FrameAttention(
                channels,
                heads=1,
                dim_head=channels,
                eps=1e-6,
                norm_num_groups=groups,
                residual_connection=True,
                bias=True,
                upcast_softmax=True,
                **_compat.legacy_vae_attention_kwargs(),
                processor=CVVAEAttnProcessor(),
            )
        self.attentions = nn.ModuleList([attention])

    def forward(self, x):
        x = self.resnets[0](x)
        if self.attentions[0] is not None:
            x = self.attentions[0](x)
        return self.resnets[1](x)


def _check_block_types(types: Sequence[str], expected: str) -> None:
    unknown = [t for t in types if t != expected]
    if unknown:
        raise ValueError(f"CV-VAE SD3 supports only {expected!r} blocks; found {unknown}.")


class Encoder3D(_CheckpointMixin, nn.Module):
    """CV-VAE SD3 encoder: ``(b, 3, 1 + 4k, H, W) -> (b, 2 * 16, 1 + k, H / 8, W / 8)``."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 16,
        down_block_types: Sequence[str] = ("DownEncoderBlock3D",) * 4,
        block_out_channels: Sequence[int] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        double_z: bool = True,
        mid_block_add_attention: bool = True,
        causal: bool = True,
        half_3d: bool = True,
    ):
        super().__init__()
        _check_block_types(down_block_types, "DownEncoderBlock3D")
        self.conv_in = _conv(in_channels, block_out_channels[0], causal)
        self.down_blocks = nn.ModuleList()
        output_channel = block_out_channels[0]
        for i in range(len(down_block_types)):
            input_channel, output_channel = output_channel, block_out_channels[i]
            is_final = i == len(block_out_channels) - 1
            self.down_blocks.append(
                DownEncoderBlock3D(
                    input_channel,
                    output_channel,
                    layers_per_block,
                    norm_num_groups,
                    act_fn,
                    causal,
                    half_3d,
                    add_downsample=not is_final,
                    down_time=i % 2 == 0 and not is_final,
                )
            )
        self.mid_block = UNetMidBlock3D(
            block_out_channels[-1], norm_num_groups, act_fn, causal, half_3d, mid_block_add_attention
        )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = _conv(block_out_channels[-1], 2 * out_channels if double_z else out_channels, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = self._run(block, x)
        x = self._run(self.mid_block, x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


class Decoder3D(_CheckpointMixin, nn.Module):
    """CV-VAE SD3 decoder: ``(b, 16, 1 + k, h, w) -> (b, 3, 1 + 4k, 8h, 8w)``."""

    def __init__(
        self,
        in_channels: int = 16,
        out_channels: int = 3,
        up_block_types: Sequence[str] = ("UpDecoderBlock3D",) * 4,
        block_out_channels: Sequence[int] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        mid_block_add_attention: bool = True,
        causal: bool = False,
        half_3d: bool = True,
    ):
        super().__init__()
        _check_block_types(up_block_types, "UpDecoderBlock3D")
        self.conv_in = _conv(in_channels, block_out_channels[-1], causal)
        self.mid_block = UNetMidBlock3D(
            block_out_channels[-1], norm_num_groups, act_fn, causal, half_3d, mid_block_add_attention
        )
        reversed_channels = list(reversed(block_out_channels))
        self.up_blocks = nn.ModuleList()
        output_channel = reversed_channels[0]
        for i in range(len(up_block_types)):
            prev_channel, output_channel = output_channel, reversed_channels[i]
            is_final = i == len(block_out_channels) - 1
            self.up_blocks.append(
                UpDecoderBlock3D(
                    prev_channel,
                    output_channel,
                    layers_per_block + 1,
                    norm_num_groups,
                    act_fn,
                    causal,
                    half_3d,
                    add_upsample=not is_final,
                    up_time=i % 2 == 0 and not is_final,
                )
            )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[0], eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = _conv(block_out_channels[0], out_channels, causal)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        x = self._run(self.mid_block, x)
        for block in self.up_blocks:
            x = self._run(block, x)
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))

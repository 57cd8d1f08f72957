"""Encoder and decoder of CV-VAE v1 / v1-1 (the SD 2.1 / SVD compatible video VAE, 4 latent channels).

The layout is the Stable Diffusion VAE's (``ldm`` naming: ``down.{i}.block.{j}``, ``mid.block_1``,
``mid.attn_1``...) so parameter names match the official checkpoints, with "half 3D" residual blocks: the
first convolution of each block is 3D, the second is 2D per frame. Time is compressed 4x by downsampling
time in encoder levels 0 and 2 only (and upsampling it in decoder levels 1 and 3).
"""

from typing import List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .attention import single_head_attention
from .layers import FrameConv2d, VideoConv3d, batch_to_frames, channels_to_time, conv3x3x3, frames_to_batch

# Official config values that name xformers kernels; they describe *what* is computed, and our blocks compute
# the same thing with SDPA (or xformers when it runs), so they map onto the same modules.
SPATIAL_ATTENTION_TYPES = ("vanilla", "vanilla-xformers")
SPATIAL_TEMPORAL_ATTENTION_TYPES = ("spatial-temporal-xformer", "spatial-temporal")
NO_ATTENTION_TYPES = ("none",)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-5, affine=True)


def _make_conv(in_channels, out_channels, kernel_size, use_3d_conv, causal):
    if not use_3d_conv:
        return FrameConv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    # v1 pads space with zeros; its non-causal 3D convolutions are plain zero-padded ``nn.Conv3d``.
    return conv3x3x3(
        in_channels, out_channels, causal, "constant", "constant", kernel_size=kernel_size
    )


class ResnetBlock3D(nn.Module):
    """Pre-norm residual block: GroupNorm, SiLU, 3D conv, GroupNorm, SiLU, dropout, conv (2D if half 3D)."""

    def __init__(self, in_channels, out_channels, dropout=0.0, use_3d_conv=True, half_3d=True, causal=False):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = _group_norm(in_channels)
        self.conv1 = _make_conv(in_channels, out_channels, 3, use_3d_conv, causal)
        self.norm2 = _group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        if half_3d:
            self.conv2 = FrameConv2d(out_channels, out_channels, 3, padding=1)
        else:
            self.conv2 = _make_conv(out_channels, out_channels, 3, use_3d_conv, causal)
        if in_channels != out_channels:
            self.nin_shortcut = _make_conv(in_channels, out_channels, 1, use_3d_conv, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class SpatialAttnBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (the SD VAE mid-block attention)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = _group_norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """Attention output (before the residual), ``(b * t, c, h, w)`` in and out."""
        bt, c, height, width = x.shape
        h = self.norm(x)
        q, k, v = (proj(h).flatten(2).transpose(1, 2) for proj in (self.q, self.k, self.v))
        out = single_head_attention(q, k, v).transpose(1, 2).reshape(bt, c, height, width)
        return self.proj_out(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + batch_to_frames(self.spatial(frames_to_batch(x)), x.shape[0])


class SpatialTemporalAttnBlock(SpatialAttnBlock):
    """Spatial attention per frame followed by temporal attention per pixel (decoder mid block of v1).

    The temporal attention acts on the spatial attention's output (not on its residual sum), and one
    residual connection closes both, as in the official decoder.
    """

    def __init__(self, channels: int):
        super().__init__(channels)
        self.q_t = nn.Linear(channels, channels)
        self.k_t = nn.Linear(channels, channels)
        self.v_t = nn.Linear(channels, channels)
        self.proj_out_t = nn.Linear(channels, channels)
        self.norm_t = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, height, width = x.shape
        h = self.spatial(frames_to_batch(x))  # (b t) c h w
        h = h.reshape(b, t, c, height * width).permute(0, 3, 1, 2).reshape(b * height * width, t, c)
        h = self.norm_t(h)
        h = single_head_attention(self.q_t(h), self.k_t(h), self.v_t(h))
        h = self.proj_out_t(h)
        h = h.reshape(b, height, width, t, c).permute(0, 4, 3, 1, 2)
        return x + h


def make_attention(channels: int, attn_type: str) -> nn.Module:
    if attn_type in SPATIAL_ATTENTION_TYPES:
        return SpatialAttnBlock(channels)
    if attn_type in SPATIAL_TEMPORAL_ATTENTION_TYPES:
        return SpatialTemporalAttnBlock(channels)
    if attn_type in NO_ATTENTION_TYPES:
        return nn.Identity()
    supported = SPATIAL_ATTENTION_TYPES + SPATIAL_TEMPORAL_ATTENTION_TYPES + NO_ATTENTION_TYPES
    raise ValueError(f"Unknown CV-VAE attention type {attn_type!r}; expected one of {list(supported)}.")


class Downsample3D(nn.Module):
    """Stride-2 3D convolution; halves time too when ``down_time`` (frames ``1 + 2k -> 1 + k``)."""

    def __init__(self, channels: int, down_time: bool):
        super().__init__()
        # Asymmetric (right/bottom) zero padding as in the SD VAE, and frame 0 replicated twice in front so
        # the first output frame depends on the first input frame only.
        self.conv = VideoConv3d(
            channels,
            channels,
            3,
            stride=2 if down_time else (1, 2, 2),
            spatial_padding=(0, 1, 0, 1),
            temporal_padding=(2, 0),
            spatial_pad_mode="constant",
            temporal_pad_mode="replicate",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample3D(nn.Module):
    """Nearest 2x spatial upsampling + 3D conv; when ``up_time`` the conv predicts two frames per frame."""

    def __init__(self, channels: int, up_time: bool):
        super().__init__()
        self.time_factor = 2 if up_time else 1
        self.conv = VideoConv3d(
            channels,
            channels * self.time_factor,
            3,
            spatial_padding=(1, 1, 1, 1),
            temporal_padding=(1, 1),
            spatial_pad_mode="constant",
            temporal_pad_mode="replicate",
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        x = channels_to_time(self.conv(x), self.time_factor)
        # 1 + k frames became 2 + 2k; dropping the first keeps the "1 + 2k" (causal image frame) structure.
        return x[:, :, 1:] if self.time_factor > 1 else x


class _CheckpointMixin:
    gradient_checkpointing = False

    def _run(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)


class Encoder(_CheckpointMixin, nn.Module):
    """CV-VAE v1 encoder: ``(b, 3, 1 + 4k, H, W) -> (b, 2 * z_channels, 1 + k, H / 8, W / 8)``."""

    def __init__(
        self,
        *,
        ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        in_channels: int = 3,
        z_channels: int = 4,
        double_z: bool = True,
        attn_type: str = "vanilla",
        use_3d_conv: bool = True,
        half_3d: bool = True,
        causal: bool = True,
        resolution: int = 256,
    ):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        self.conv_in = _make_conv(in_channels, ch, 3, use_3d_conv, causal)
        in_ch_mult = (1,) + tuple(ch_mult)
        curr_res = resolution
        self.down = nn.ModuleList()
        for i_level in range(self.num_resolutions):
            block_in, block_out = ch * in_ch_mult[i_level], ch * ch_mult[i_level]
            down = nn.Module()
            down.block = nn.ModuleList()
            down.attn = nn.ModuleList()
            for _ in range(num_res_blocks):
                down.block.append(ResnetBlock3D(block_in, block_out, dropout, use_3d_conv, half_3d, causal))
                block_in = block_out
                if curr_res in attn_resolutions:
                    down.attn.append(make_attention(block_in, attn_type))
            if i_level != self.num_resolutions - 1:
                # Time is halved at every other level (0, 2, ...): 4x over the default 4 levels.
                down.downsample = Downsample3D(block_in, down_time=i_level % 2 == 0)
                curr_res //= 2
            self.down.append(down)

        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock3D(block_in, block_in, dropout, use_3d_conv, half_3d, causal)
        self.mid.attn_1 = make_attention(block_in, attn_type)
        self.mid.block_2 = ResnetBlock3D(block_in, block_in, dropout, use_3d_conv, half_3d, causal)
        self.norm_out = _group_norm(block_in)
        self.conv_out = _make_conv(block_in, 2 * z_channels if double_z else z_channels, 3, use_3d_conv, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for i_level, down in enumerate(self.down):
            for i_block, block in enumerate(down.block):
                h = self._run(block, h)
                if len(down.attn) > 0:
                    h = down.attn[i_block](h)
            if i_level != self.num_resolutions - 1:
                h = down.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(_CheckpointMixin, nn.Module):
    """CV-VAE v1 decoder: ``(b, z_channels, 1 + k, h, w) -> (b, 3, 1 + 4k, 8h, 8w)``."""

    def __init__(
        self,
        *,
        ch: int,
        out_ch: int,
        ch_mult: Sequence[int],
        num_res_blocks: int,
        attn_resolutions: Sequence[int] = (),
        dropout: float = 0.0,
        z_channels: int = 4,
        attn_type: str = "spatial-temporal",
        use_3d_conv: bool = True,
        half_3d: bool = True,
        causal: bool = False,
        resolution: int = 256,
    ):
        super().__init__()
        self.num_resolutions = len(ch_mult)
        block_in = ch * ch_mult[-1]
        curr_res = resolution // 2 ** (self.num_resolutions - 1)
        self.conv_in = _make_conv(z_channels, block_in, 3, use_3d_conv, causal)
        self.mid = nn.Module()
        self.mid.block_1 = ResnetBlock3D(block_in, block_in, dropout, use_3d_conv, half_3d, causal)
        self.mid.attn_1 = make_attention(block_in, attn_type)
        self.mid.block_2 = ResnetBlock3D(block_in, block_in, dropout, use_3d_conv, half_3d, causal)

        ups: List[nn.Module] = []
        for i_level in reversed(range(self.num_resolutions)):
            block_out = ch * ch_mult[i_level]
            up = nn.Module()
            up.block = nn.ModuleList()
            up.attn = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                up.block.append(ResnetBlock3D(block_in, block_out, dropout, use_3d_conv, half_3d, causal))
                block_in = block_out
                if curr_res in attn_resolutions:
                    up.attn.append(make_attention(block_in, attn_type))
            if i_level != 0:
                up.upsample = Upsample3D(block_in, up_time=i_level % 2 == 1)
                curr_res *= 2
            ups.insert(0, up)  # ``up.0`` is the highest resolution, as in the checkpoints
        self.up = nn.ModuleList(ups)
        self.norm_out = _group_norm(block_in)
        self.conv_out = _make_conv(block_in, out_ch, 3, use_3d_conv, causal)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i_level in reversed(range(self.num_resolutions)):
            up = self.up[i_level]
            for i_block, block in enumerate(up.block):
                h = self._run(block, h)
                if len(up.attn) > 0:
                    h = up.attn[i_block](h)
            if i_level != 0:
                h = up.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))

"""Convolution primitives of the CV-VAE "half 3D" architecture.

CV-VAE mixes 3D convolutions (which see time) with 2D convolutions applied frame by frame. The official v1
and SD3 variants differ only in how they pad: v1 pads space with zeros, SD3 replicates the border, and both
pad time by replicating the first frame in front ("causal", so frame 0 sees only itself and a single image
maps to the image VAE's latent) or on both sides. Padding is therefore an explicit, per-layer attribute here
instead of ``nn.Conv3d(padding=...)``, which can only zero-pad all dimensions alike.
"""

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def _pad(x: torch.Tensor, pads: Tuple[int, ...], mode: str) -> torch.Tensor:
    if not any(pads):
        return x
    if mode == "constant":
        return F.pad(x, pads, mode="constant", value=0.0)
    return F.pad(x, pads, mode=mode)


class VideoConv3d(nn.Conv3d):
    """A ``Conv3d`` whose space and time padding are chosen separately.

    Args:
        spatial_padding: ``(left, right, top, bottom)`` pixels added before the convolution.
        temporal_padding: ``(front, back)`` frames added before the convolution.
        spatial_pad_mode / temporal_pad_mode: ``"constant"`` (zeros) or ``"replicate"``.

    Example:
        >>> import torch
        >>> conv = VideoConv3d(3, 8, 3, spatial_padding=(1, 1, 1, 1), temporal_padding=(2, 0))
        >>> conv(torch.randn(1, 3, 5, 16, 16)).shape
        torch.Size([1, 8, 5, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride=1,
        spatial_padding: Tuple[int, int, int, int] = (0, 0, 0, 0),
        temporal_padding: Tuple[int, int] = (0, 0),
        spatial_pad_mode: str = "constant",
        temporal_pad_mode: str = "replicate",
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        self.spatial_padding = tuple(spatial_padding)
        self.temporal_padding = tuple(temporal_padding)
        self.spatial_pad_mode = spatial_pad_mode
        self.temporal_pad_mode = temporal_pad_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial_pad_mode == self.temporal_pad_mode:
            x = _pad(x, self.spatial_padding + self.temporal_padding, self.spatial_pad_mode)
        else:
            x = _pad(x, self.spatial_padding, self.spatial_pad_mode)
            x = _pad(x, (0, 0, 0, 0) + self.temporal_padding, self.temporal_pad_mode)
        return super().forward(x)


def conv3x3x3(
    in_channels: int,
    out_channels: int,
    causal: bool,
    spatial_pad_mode: str,
    non_causal_time_pad_mode: str,
    stride=1,
    kernel_size: int = 3,
) -> VideoConv3d:
    """A "same" 3D convolution: causal (replicate frame 0 in front) or centred in time.

    Example:
        >>> import torch
        >>> conv = conv3x3x3(4, 4, causal=True, spatial_pad_mode="constant", non_causal_time_pad_mode="constant")
        >>> conv(torch.randn(1, 4, 3, 8, 8)).shape
        torch.Size([1, 4, 3, 8, 8])
    """
    p = kernel_size // 2
    if causal:
        temporal, time_mode = (2 * p, 0), "replicate"
    else:
        temporal, time_mode = (p, p), non_causal_time_pad_mode
    return VideoConv3d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        spatial_padding=(p, p, p, p),
        temporal_padding=temporal,
        spatial_pad_mode=spatial_pad_mode,
        temporal_pad_mode=time_mode,
    )


class FrameConv2d(nn.Conv2d):
    """A ``Conv2d`` applied to every frame of a ``(batch, channels, frames, height, width)`` video.

    The "half 3D" design uses these for the second convolution of each residual block: time is mixed by
    the first convolution only, which halves the cost and keeps the 2D image-VAE weights directly usable.

    Example:
        >>> import torch
        >>> FrameConv2d(3, 8, 3, padding=1)(torch.randn(2, 3, 5, 16, 16)).shape
        torch.Size([2, 8, 5, 16, 16])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            return super().forward(x)
        frames = frames_to_batch(x)
        return batch_to_frames(super().forward(frames), x.shape[0])


def frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    """``(b, c, t, h, w) -> (b * t, c, h, w)``."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def batch_to_frames(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(b * t, c, h, w) -> (b, c, t, h, w)``."""
    bt, c, h, w = x.shape
    return x.reshape(batch_size, bt // batch_size, c, h, w).permute(0, 2, 1, 3, 4)


def channels_to_time(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Temporal "pixel shuffle": ``(b, factor * c, t, h, w) -> (b, c, t * factor, h, w)``.

    The upsampler's convolution predicts ``factor`` frames per input frame, stacked channel-major; this
    interleaves them in time. Then the caller drops the first frame so ``1 + k`` latents give ``1 + 2k``.
    """
    if factor == 1:
        return x
    b, nc, t, h, w = x.shape
    c = nc // factor
    return x.reshape(b, factor, c, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, t * factor, h, w)

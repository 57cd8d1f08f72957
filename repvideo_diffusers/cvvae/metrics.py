"""Reconstruction metrics: PSNR and SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5)."""

import math

import torch
import torch.nn.functional as F


def _as_images(x: torch.Tensor) -> torch.Tensor:
    # Videos (b, c, t, h, w) are scored frame by frame.
    if x.dim() == 5:
        b, c, t, h, w = x.shape
        return x.transpose(1, 2).reshape(b * t, c, h, w)
    if x.dim() == 4:
        return x
    raise ValueError(f"Expected images (b, c, h, w) or videos (b, c, t, h, w); found shape {tuple(x.shape)}.")


def psnr(prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements: ``10 log10(data_range^2 / MSE)``; ``inf`` if equal.

    Example:
        >>> import torch
        >>> x = torch.zeros(1, 3, 8, 8)
        >>> round(psnr(x + 0.1, x), 3)
        20.0
        >>> psnr(x, x)
        inf
    """
    if prediction.shape != target.shape:
        raise ValueError(f"PSNR needs equal shapes; found {tuple(prediction.shape)} and {tuple(target.shape)}.")
    mse = torch.mean((prediction.double() - target.double()) ** 2).item()
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=torch.float64) -> torch.Tensor:
    """Normalised 2D Gaussian window ``(size, size)``."""
    coords = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(
    prediction: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity over all frames and channels (Gaussian window, "valid" filtering as in
    the reference MATLAB implementation, ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``).

    Example:
        >>> import torch
        >>> x = torch.rand(1, 3, 32, 32)
        >>> ssim(x, x)
        1.0
    """
    if prediction.shape != target.shape:
        raise ValueError(f"SSIM needs equal shapes; found {tuple(prediction.shape)} and {tuple(target.shape)}.")
    x, y = _as_images(prediction).double(), _as_images(target).double()
    if min(x.shape[-2:]) < window_size:
        raise ValueError(f"SSIM needs frames of at least {window_size}x{window_size}; found {tuple(x.shape[-2:])}.")
    channels = x.shape[1]
    window = gaussian_window(window_size, sigma).to(x.device)[None, None].repeat(channels, 1, 1, 1)

    def blur(t):
        return F.conv2d(t, window, groups=channels)

    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean().item()

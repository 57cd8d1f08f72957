"""Attention backend for CV-VAE: PyTorch SDPA by default, xformers when it really runs.

The official implementation calls ``xformers.ops.memory_efficient_attention`` unconditionally, which needs
xformers *and* a CUDA kernel for the tensor's device. Importability is not enough (xformers 0.0.35 imports on
CPU-only machines but has no CPU operator), so the backend is chosen by probing a tiny real call once per
(device type, dtype) with the package's one probe (`repvideo_diffusers.attention.probe_xformers`) and falling
back to SDPA. Both compute the same single-head softmax(QK^T/sqrt(d))V.
"""

import logging
import os
from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ..attention.kernels import probe_xformers

logger = logging.getLogger(__name__)

_BACKENDS: Dict[Tuple[str, torch.dtype], str] = {}

# "auto" probes xformers then falls back to SDPA; "sdpa" never tries xformers (useful for exact CPU parity).
_ENV_VAR = "REPVIDEO_CVVAE_ATTENTION"


def attention_backend(device: torch.device, dtype: torch.dtype) -> str:
    """Return ``"xformers"`` or ``"sdpa"``: the backend CV-VAE attention uses for tensors of this kind.

    Example:
        >>> import torch
        >>> from repvideo_diffusers.cvvae.attention import attention_backend
        >>> attention_backend(torch.device("cpu"), torch.float32)
        'sdpa'
    """
    key = (device.type, dtype)
    if key not in _BACKENDS:
        wanted = os.environ.get(_ENV_VAR, "auto").lower()
        problem = probe_xformers(device, dtype) if wanted in ("auto", "xformers") else "not asked for"
        if problem is not None and wanted != "sdpa":
            logger.info("xformers cannot run CV-VAE attention on %s/%s: %s", device.type, dtype, problem)
        _BACKENDS[key] = "xformers" if problem is None else "sdpa"
        logger.info("CV-VAE attention on %s/%s runs with %s", device.type, dtype, _BACKENDS[key])
    return _BACKENDS[key]


def single_head_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Single-head scaled dot-product attention on ``(batch, tokens, channels)`` tensors.

    Example:
        >>> import torch
        >>> q = torch.randn(2, 5, 8)
        >>> single_head_attention(q, q, q).shape
        torch.Size([2, 5, 8])
    """
    if attention_backend(query.device, query.dtype) == "xformers":
        import xformers.ops

        return xformers.ops.memory_efficient_attention(query, key, value)
    return F.scaled_dot_product_attention(query[:, None], key[:, None], value[:, None])[:, 0]

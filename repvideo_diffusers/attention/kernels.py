"""Attention kernels and the one xformers probe (used by the RepVideo processors and by CV-VAE).

Both kernels take PyTorch SDPA's arguments and its (batch, heads, tokens, dim) layout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KERNELS = ("sdpa", "xformers")
# diffusers' attention backend names (`ModelMixin.set_attention_backend`) for the same kernels.
KERNEL_ALIASES = {"native": "sdpa"}


def sdpa_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """PyTorch's fused ``scaled_dot_product_attention``, called exactly as the stock processors call it."""
    kwargs = {"enable_gqa": True} if enable_gqa else {}
    return F.scaled_dot_product_attention(
        query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs
    )


def xformers_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                       enable_gqa=False):
    """xformers memory-efficient attention with SDPA's (batch, heads, tokens, dim) layout and arguments."""
    import xformers.ops

    if dropout_p or is_causal or enable_gqa:
        raise ValueError(
            "the xformers kernel supports neither dropout, causal masks nor grouped-query attention (the stock "
            "processors use none); use kernel 'sdpa' for this model."
        )
    bias = None
    if attn_mask is not None:
        bias = attn_mask
        if bias.dtype == torch.bool:
            bias = torch.zeros(bias.shape, dtype=query.dtype, device=query.device).masked_fill(~bias, float("-inf"))
        bias = bias.to(query.dtype).expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    out = xformers.ops.memory_efficient_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_bias=bias, scale=scale
    )
    return out.transpose(1, 2)


KERNEL_FUNCTIONS = {"sdpa": sdpa_attention, "xformers": xformers_attention}


def probe_xformers(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> str | None:
    """Run one small xformers attention on ``device``; return ``None`` if it works, else why it does not.

    Importing xformers proves nothing: 0.0.35 installs on a CPU-only machine but has no CPU operator.

    Example:
        ```python
        >>> from repvideo_diffusers.attention import probe_xformers
        >>> probe_xformers("cpu") is not None  # no xformers operator runs on a CPU
        True

        ```
    """
    try:
        import xformers.ops
    except Exception as error:  # ImportError, or a broken build raising anything at import
        return f"xformers cannot be imported ({type(error).__name__}: {error})"
    try:
        q = torch.randn(1, 16, 2, 64, device=device, dtype=dtype)
        out = xformers.ops.memory_efficient_attention(q, q, q)
        if out.shape != q.shape or not torch.isfinite(out).all():
            return (f"xformers returned a wrong result on {device} ({tuple(out.shape)}, "
                    f"finite={bool(torch.isfinite(out).all())})")
    except Exception as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return f"xformers has no working operator on {device} for {dtype} ({type(error).__name__}: {first_line})"
    return None


def resolve_kernel(name: str) -> str:
    """``"auto"`` / ``"sdpa"`` / ``"xformers"``, or diffusers' name ``"native"`` for SDPA; raises for others."""
    wanted = KERNEL_ALIASES.get(name, name)
    if wanted not in ("auto", *KERNELS):
        raise ValueError(
            f"attention kernel must be one of auto, xformers, sdpa, got {name!r} (diffusers' name 'native' is "
            "accepted for sdpa; its other backends are set with `transformer.set_attention_backend`)."
        )
    return wanted

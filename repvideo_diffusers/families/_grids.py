"""Video token grids shared by several families (used by attention capture and the analysis tools)."""

from __future__ import annotations


def channels_first_grid(transformer, args, kwargs) -> tuple[int, int, int]:
    """(t, h, w) of a ``(B, C, F, H, W)`` latent input patched by ``config.patch_size`` (Wan: a (t, h, w) triple;
    others: a spatial size plus ``patch_size_t``)."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    frames, height, width = hidden.shape[2:]
    patch = transformer.config.patch_size
    if isinstance(patch, (tuple, list)) and len(patch) == 3:
        pt, ph, pw = patch
    else:
        pt = getattr(transformer.config, "patch_size_t", None) or 1
        ph, pw = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
    return frames // pt, height // ph, width // pw


def channels_last_grid(transformer, args, kwargs) -> tuple[int, int, int]:
    """(t, h, w) of a ``(B, F, H, W, C)`` latent input patched by a ``(t, h, w)`` ``config.patch_size`` (Kandinsky)."""
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    frames, height, width = hidden.shape[1:4]
    pt, ph, pw = transformer.config.patch_size
    return frames // pt, height // ph, width // pw

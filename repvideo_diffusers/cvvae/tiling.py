"""Spatial tiling with overlap blending that covers every pixel at every frame size.

The official CV-VAE walks tiles with a fixed stride and stops early, so frames whose size does not line up
with the stride lose their border (tile 32 on a 64x64 frame gives a 7x7 latent, a 57x57 frame). Here tile
starts are spread evenly between 0 and ``size - tile`` (aligned to the 8x spatial compression, so pixel and
latent tiles line up), the last tile always ends at the border, and overlaps are blended with linear ramps
whose weights are normalised, so every output position is a convex combination of the tiles covering it.
"""

import math
from typing import List, Tuple

import torch


def tile_spans(size: int, tile: int, overlap: int, align: int = 1) -> List[Tuple[int, int]]:
    """``(start, end)`` of tiles of length ``tile`` covering ``[0, size)`` with at least ``overlap`` overlap.

    Starts are multiples of ``align``; the last tile ends at ``size``; tiles never exceed ``size``.

    Example:
        >>> tile_spans(64, 32, 8, align=8)
        [(0, 32), (16, 48), (32, 64)]
        >>> tile_spans(40, 64, 8)
        [(0, 40)]
    """
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"Tiling needs 0 <= overlap < tile; found tile={tile}, overlap={overlap}.")
    if size <= tile:
        return [(0, size)]
    stride = tile - overlap
    count = math.ceil((size - tile) / stride) + 1
    last_start = size - tile
    starts = []
    for i in range(count):
        start = (round(i * last_start / (count - 1) / align) * align) if i < count - 1 else last_start
        # Aligning down may open a gap only if the stride is tiny; keep every start <= previous end.
        starts.append(min(start, last_start))
    # The last start may not be aligned when ``size`` is not a multiple of ``align``: align it down, the tile
    # then simply runs to the border and is shorter or longer by less than ``align``.
    starts[-1] = (last_start // align) * align
    spans = []
    for start in sorted(set(starts)):
        spans.append((start, size if start == starts[-1] else min(start + tile, size)))
    return spans


def blend_ramp(spans: List[Tuple[int, int]], index: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """1D blend weights of tile ``index``: a linear ramp up over the overlap with the previous tile and a
    ramp down over the overlap with the next one, so that two overlapping ramps sum to 1.

    Example:
        >>> [round(w, 3) for w in blend_ramp([(0, 4), (2, 6)], 0).tolist()]
        [1.0, 1.0, 0.667, 0.333]
    """
    start, end = spans[index]
    weight = torch.ones(end - start, device=device, dtype=dtype)
    if index > 0:
        overlap = min(spans[index - 1][1] - start, end - start)
        if overlap > 0:
            weight[:overlap] *= torch.arange(1, overlap + 1, device=device, dtype=dtype) / (overlap + 1)
    if index < len(spans) - 1:
        overlap = min(end - spans[index + 1][0], end - start)
        if overlap > 0:
            weight[end - start - overlap :] *= torch.arange(overlap, 0, -1, device=device, dtype=dtype) / (
                overlap + 1
            )
    return weight


class TileAccumulator:
    """Accumulates weighted tiles into a ``(..., height, width)`` canvas and normalises at the end.

    Example:
        >>> import torch
        >>> rows, cols = tile_spans(6, 4, 2), tile_spans(5, 5, 0)
        >>> canvas = TileAccumulator(rows, cols)
        >>> for i, (r0, r1) in enumerate(rows):
        ...     canvas.add(i, 0, torch.ones(1, r1 - r0, 5))
        >>> torch.allclose(canvas.result(), torch.ones(1, 6, 5))
        True
    """

    def __init__(self, rows: List[Tuple[int, int]], cols: List[Tuple[int, int]]):
        self.rows, self.cols = rows, cols
        self.canvas = None
        self.weight = None

    def add(self, i: int, j: int, tile: torch.Tensor) -> None:
        (r0, r1), (c0, c1) = self.rows[i], self.cols[j]
        if tile.shape[-2:] != (r1 - r0, c1 - c0):
            raise RuntimeError(f"tile ({i}, {j}) has size {tuple(tile.shape[-2:])}, expected {(r1 - r0, c1 - c0)}")
        if self.canvas is None:
            shape = tile.shape[:-2] + (self.rows[-1][1], self.cols[-1][1])
            self.canvas = torch.zeros(shape, device=tile.device, dtype=torch.float32)
            self.weight = torch.zeros(shape[-2:], device=tile.device, dtype=torch.float32)
        weight = blend_ramp(self.rows, i, tile.device)[:, None] * blend_ramp(self.cols, j, tile.device)[None, :]
        self.canvas[..., r0:r1, c0:c1] += tile.float() * weight
        self.weight[r0:r1, c0:c1] += weight

    def result(self, dtype=None) -> torch.Tensor:
        out = self.canvas / self.weight
        return out if dtype is None else out.to(dtype)

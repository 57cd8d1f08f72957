"""The paper's measurements on one transformer: cross-layer attention-map similarity and adjacent-frame feature
similarity, plus the hooks that record both during a forward call (`diagnose_transformer`) or a denoising loop
(`repvideo_diffusers.analysis.analyze`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..attention import capture_attention
from ..families import get_family, get_transformer_blocks


def attention_similarity(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Layer x layer cosine similarity of attention maps.

    Args:
        maps: one tensor per layer, all the same shape (batch, queries, key tokens), as recorded by
            `capture_attention`. Each query's row is compared across layers; the result averages over batch and
            queries.

    Returns:
        float64 (layers, layers) tensor with entries in [-1, 1] and ones on the diagonal.

    Example:
        ```python
        >>> import torch
        >>> from repvideo_diffusers.analysis import attention_similarity
        >>> a = torch.tensor([[[1.0, 0.0]]]); b = torch.tensor([[[0.0, 1.0]]])
        >>> attention_similarity([a, b, a]).tolist()
        [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
        ```
    """
    stacked = torch.stack([m.double().flatten(0, -2) for m in maps])  # (layers, rows, tokens)
    unit = torch.nn.functional.normalize(stacked, dim=-1)
    similarity = torch.einsum("lrn,mrn->lmr", unit, unit).mean(-1)
    similarity = ((similarity + similarity.T) / 2).clamp_(-1.0, 1.0)  # exactly symmetric despite rounding
    similarity.fill_diagonal_(1.0)  # a map is identical to itself; rounding must not say otherwise
    return similarity


def adjacent_frame_similarity(features: torch.Tensor, grid: tuple[int, int, int]) -> float:
    """Mean cosine similarity between neighbouring latent frames' features at the same spatial position.

    Args:
        features: video tokens (batch, t * h * w, channels) in frame-major order, as every supported block emits.
        grid: the token grid (t, h, w).

    Example:
        ```python
        >>> import torch
        >>> from repvideo_diffusers.analysis import adjacent_frame_similarity
        >>> frame = torch.randn(1, 4, 8)
        >>> adjacent_frame_similarity(torch.cat([frame, frame, -frame], dim=1), (3, 2, 2))  # (1 + -1) / 2
        0.0
        ```
    """
    t, h, w = grid
    if t < 2:
        raise ValueError(f"adjacent-frame similarity needs at least 2 latent frames, got {t}. Generate more frames.")
    if features.shape[1] != t * h * w:
        raise ValueError(
            f"expected {t} x {h} x {w} = {t * h * w} video tokens from the block, found {features.shape[1]}: "
            "this block's output is not laid out as the model's video token grid."
        )
    frames = features.double().unflatten(1, (t, h * w))
    cosine = torch.nn.functional.cosine_similarity(frames[:, :-1], frames[:, 1:], dim=-1)
    return round(float(cosine.mean()), 12)


class StepRecorder:
    """Hooks on one transformer: per transformer call, the attention similarity and the per-block frame
    similarity; `close_step` averages the calls of one denoising step (CFG may run two calls per step).

    ``steps_attention`` (step x layer x layer) and ``steps_frames`` (step x block) hold the closed steps.
    """

    def __init__(self, transformer: torch.nn.Module, capture):
        self.capture = capture
        self.blocks = get_transformer_blocks(transformer)
        self.attention: list[torch.Tensor] = []
        self.frames: list[list[float]] = []
        self.current_frames: list[float] = []
        self.steps_attention: list[list[list[float]]] = []
        self.steps_frames: list[list[float]] = []
        self.handles = [transformer.register_forward_pre_hook(self._start)]
        for block_list, block in get_family(transformer).block_lists(transformer):
            index = block_list.outputs[0] if block_list.outputs is not None else 0  # the video stream
            self.handles.append(block.register_forward_hook(self._block_hook(index)))
        self.handles.append(transformer.register_forward_hook(self._finish))

    def _start(self, module, args):
        self.current_frames = []

    def _block_hook(self, index):
        def hook(module, args, output):
            features = output[index] if isinstance(output, tuple) else output
            t, h, w = self.capture.grid
            if features.shape[1] > t * h * w:  # other tokens in the stream too (Helios: history first)
                features = features[:, -t * h * w:] if self.capture.text_first else features[:, : t * h * w]
            self.current_frames.append(adjacent_frame_similarity(features.detach(), self.capture.grid))

        return hook

    def _finish(self, module, args, output):
        self.attention.append(attention_similarity(self.capture.maps))
        self.frames.append(self.current_frames)

    def close_step(self):
        if not self.attention:
            return
        self.steps_attention.append(torch.stack(self.attention).mean(0).tolist())
        self.steps_frames.append(torch.tensor(self.frames, dtype=torch.float64).mean(0).tolist())
        self.attention, self.frames = [], []

    def remove(self):
        for handle in self.handles:
            handle.remove()


def diagnose_transformer(transformer: torch.nn.Module, queries: str | Sequence[int] = "frames", **inputs) -> dict:
    """The diagnostics of one transformer forward call on ``inputs`` (no pipeline, no denoising loop).

    Returns:
        ``{"attention_similarity": layers x layers, "frame_similarity": one value per block, "grid": (t, h, w)}``.

    Example:
        ```python
        >>> from repvideo_diffusers.analysis import diagnose_transformer
        >>> from repvideo_diffusers.testing import TINY_MODELS
        >>> transformer, inputs = TINY_MODELS["Wan"].build()
        >>> result = diagnose_transformer(transformer, **inputs)
        >>> len(result["attention_similarity"]), len(result["frame_similarity"])
        (4, 4)
        ```
    """
    with capture_attention(transformer, queries=queries) as capture:
        recorder = StepRecorder(transformer, capture)
        try:
            with torch.no_grad():
                transformer(**inputs)
        finally:
            recorder.remove()
        recorder.close_step()
    return {
        "attention_similarity": recorder.steps_attention[0],
        "frame_similarity": recorder.steps_frames[0],
        "grid": list(capture.grid),
    }

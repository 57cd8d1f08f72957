"""Tiny random transformers of every supported family, with matching forward inputs.

Used by the test suite, the benchmarks and the examples; handy for checking RepVideo on a new setup without
downloading anything::

    >>> from repvideo_diffusers.testing import TINY_MODELS
    >>> transformer, inputs = TINY_MODELS["Wan"].build(seed=0)
    >>> transformer(**inputs, return_dict=False)[0].shape
    torch.Size([2, 4, 3, 8, 8])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class TinyModel:
    family: str
    make_transformer: Callable[[], torch.nn.Module]
    make_inputs: Callable[[torch.Generator, int], dict]
    num_blocks: int

    def build(self, seed: int = 0, batch_size: int = 2, dtype: torch.dtype = torch.float32):
        """(transformer in eval mode, forward kwargs), both seeded."""
        torch.manual_seed(seed)
        transformer = self.make_transformer().eval()
        if dtype != torch.float32:
            transformer.to(dtype)
        inputs = self.make_inputs(torch.Generator().manual_seed(seed + 1000), batch_size)
        inputs = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
        return transformer, inputs


def _randn(generator, *shape):
    return torch.randn(*shape, generator=generator)


def _cogvideox():
    from .tiny import build_tiny_transformer

    return build_tiny_transformer(num_layers=4)


def _cogvideox_inputs(g, b):
    # 3 latent frames of 8x12 (patch 2 -> 72 video tokens) + 16 text tokens
    return {
        "hidden_states": _randn(g, b, 3, 4, 8, 12),
        "encoder_hidden_states": _randn(g, b, 16, 16),
        "timestep": torch.tensor([500] * b),
    }


def _wan():
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4, rope_max_seq_len=32,
    )


def _wan_inputs(g, b):
    return {
        "hidden_states": _randn(g, b, 4, 3, 8, 8),
        "encoder_hidden_states": _randn(g, b, 12, 16),
        "timestep": torch.tensor([500] * b),
    }


def _hunyuan():
    from diffusers import HunyuanVideoTransformer3DModel

    return HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_single_layers=3, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 2),
    )


def _hunyuan_inputs(g, b):
    mask = torch.ones(b, 12, dtype=torch.bool)
    mask[0, 9:] = False  # padded text: the attention mask must be respected with and without RepVideo
    return {
        "hidden_states": _randn(g, b, 4, 3, 8, 8),
        "timestep": torch.tensor([500] * b),
        "encoder_hidden_states": _randn(g, b, 12, 16),
        "encoder_attention_mask": mask,
        "pooled_projections": _randn(g, b, 8),
        "guidance": torch.tensor([3500.0] * b),
    }


def _ltx():
    from diffusers import LTXVideoTransformer3DModel

    return LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=4, caption_channels=16,
    )


def _ltx_inputs(g, b):
    frames, height, width = 3, 4, 4
    return {
        "hidden_states": _randn(g, b, frames * height * width, 8),
        "encoder_hidden_states": _randn(g, b, 12, 16),
        "timestep": torch.tensor([500] * b),
        "encoder_attention_mask": torch.ones(b, 12),
        "num_frames": frames,
        "height": height,
        "width": width,
    }


def _mochi():
    from diffusers import MochiTransformer3DModel

    return MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=4, pooled_projection_dim=16,
        in_channels=4, text_embed_dim=16, time_embed_dim=4, max_sequence_length=16,
    )


def _mochi_inputs(g, b):
    return {
        "hidden_states": _randn(g, b, 4, 3, 8, 8),
        "encoder_hidden_states": _randn(g, b, 12, 16),
        "timestep": torch.tensor([500] * b),
        "encoder_attention_mask": torch.ones(b, 12, dtype=torch.bool),
    }


TINY_MODELS: dict[str, TinyModel] = {
    "CogVideoX": TinyModel("CogVideoX", _cogvideox, _cogvideox_inputs, 4),
    "Wan": TinyModel("Wan", _wan, _wan_inputs, 4),
    "HunyuanVideo": TinyModel("HunyuanVideo", _hunyuan, _hunyuan_inputs, 5),
    "LTX-Video": TinyModel("LTX-Video", _ltx, _ltx_inputs, 4),
    "Mochi": TinyModel("Mochi", _mochi, _mochi_inputs, 4),
}

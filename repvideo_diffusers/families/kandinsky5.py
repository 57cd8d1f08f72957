"""Kandinsky 5.0 (Video Lite / Pro, text-to-video and image-to-video): `Kandinsky5Transformer3DModel`.

Gated: ``visual_transformer_blocks`` in order (`Kandinsky5TransformerDecoderBlock`: self-attention over the video
tokens, cross-attention to the text, feed-forward). Blended: the video stream only (the block's ``visual_embed``).

Not gated: ``text_transformer_blocks``. They run before the visual loop on the text alone (a text refiner); their
output enters every visual block unchanged through cross-attention, so the text is a condition, not a stream.

The video stream is a flat token sequence in one fixed order for the whole loop (frame-major; with NABLA sparse
attention the tokens of each frame are grouped in 8 x 8 tiles, the same order in every block), so the cache averages
the same tokens as every other family.
"""

from __future__ import annotations

import torch

from ._grids import channels_last_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family


def randomize_modulations(transformer: torch.nn.Module, seed: int = 1, std: float = 0.2) -> torch.nn.Module:
    """Give the zero-initialised AdaLN modulations random values (in place; returns the transformer).

    Kandinsky initialises every modulation projection to zero, so a freshly built model's blocks are the identity
    (all residual gates 0) and a tiny random model would not show whether the blend reaches the blocks.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, module in transformer.named_modules():
            if name.endswith("modulation") and isinstance(getattr(module, "out_layer", None), torch.nn.Linear):
                for parameter in module.out_layer.parameters():
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return transformer


def _tiny_transformer(visual_cond: bool = False):
    """A 4-block tiny model; ``visual_cond``: the image-to-video configuration, whose input adds the first-frame
    latent and its mask as channels (``2 * 4 + 1``)."""

    def make():
        from diffusers import Kandinsky5Transformer3DModel

        transformer = Kandinsky5Transformer3DModel(
            in_visual_dim=4, out_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16, patch_size=(1, 2, 2),
            model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=4, axes_dims=(4, 2, 2),
            visual_cond=visual_cond,
        )
        return randomize_modulations(transformer)

    return make


def _tiny_inputs(channels: int = 4):
    def make(g, b):
        # 3 latent frames of 8 x 8 (patch 1 x 2 x 2: 3 x 4 x 4 video tokens), 12 text tokens
        return {
            "hidden_states": torch.randn(b, 3, 8, 8, channels, generator=g),
            "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
            "timestep": torch.tensor([500.0] * b),
            "pooled_projections": torch.randn(b, 8, generator=g),
            "visual_rope_pos": [torch.arange(3), torch.arange(4), torch.arange(4)],
            "text_rope_pos": torch.arange(12),
            "scale_factor": (1.0, 2.0, 2.0),
        }

    return make


KANDINSKY5 = register_family(Family(
    name="Kandinsky5",
    transformers=("Kandinsky5Transformer3DModel",),
    blocks=(BlockList("visual_transformer_blocks", ("visual_embed",)),),
    attention=AttentionFacts(captured="self_attention", text_first=False, grid=channels_last_grid,
                             processors=("Kandinsky5AttnProcessor",)),
    tiny=TinyModel("Kandinsky5", _tiny_transformer(), _tiny_inputs(), 4),
    notes="video (the text refiner blocks run before the loop; text is a cross-attention condition)",
))

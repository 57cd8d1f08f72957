"""Allegro: `AllegroTransformer3DModel`.

Gated: ``transformer_blocks`` in order. Blended: the video stream only; the projected T5 text enters every block
unchanged through cross-attention (``attn2``), so it is a condition, not a stream.
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family


def _tiny_transformer():
    from diffusers import AllegroTransformer3DModel

    # Allegro's rotary embedding splits each head in three (t, h, w) halves-of-pairs: a head width of 12.
    return AllegroTransformer3DModel(
        patch_size=2, patch_size_t=1, num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        num_layers=4, cross_attention_dim=24, sample_height=8, sample_width=8, sample_frames=3, caption_channels=16,
    )


def tiny_rotary_embedding(frames: int, height: int, width: int, head_dim: int = 12,
                          interpolation_scale: tuple[float, float, float] = (2.2, 2.0, 2.0)):
    """Allegro's 3D rotary embedding for a (frames, height, width) token grid, in the form the transformer takes."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed_allegro

    freqs_t, freqs_h, freqs_w, grid_t, grid_h, grid_w = get_3d_rotary_pos_embed_allegro(
        embed_dim=head_dim, crops_coords=((0, 0), (height, width)), grid_size=(height, width), temporal_size=frames,
        interpolation_scale=interpolation_scale,
    )
    positions = torch.cartesian_prod(grid_t.long(), grid_h.long(), grid_w.long())  # (t h w) order, as the tokens
    positions = positions.T.reshape(3, 1, -1).contiguous()
    return (freqs_t, freqs_h, freqs_w), tuple(positions)


def _tiny_inputs(g, b):
    mask = torch.ones(b, 12)
    mask[0, 9:] = 0  # padded text: the cross-attention mask must be respected with and without RepVideo
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),  # 3 latent frames of 8x8 -> 48 video tokens
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "encoder_attention_mask": mask,
        "timestep": torch.tensor([500] * b),
        "image_rotary_emb": tiny_rotary_embedding(3, 4, 4),
    }


ALLEGRO = register_family(Family(
    name="Allegro",
    transformers=("AllegroTransformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("AllegroAttnProcessor2_0",)),
    tiny=TinyModel("Allegro", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text is a cross-attention condition)",
))

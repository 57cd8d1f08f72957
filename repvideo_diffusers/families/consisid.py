"""ConsisID (identity-preserving image-to-video on CogVideoX-5B I2V): `ConsisIDTransformer3DModel`.

Gated: ``transformer_blocks`` in order. Blended: video and text, which flow from block to block together through
CogVideoX-style joint attention (text first in the key sequence); every block takes and returns both.

Not blended: the identity features. The local facial extractor turns the face embeddings (``id_cond``,
``id_vit_hidden``) into identity tokens once per forward call, and after each block whose index is a multiple of
``cross_attn_interval`` (0, 2, 4, ... as released) a perceiver cross-attention adds ``local_face_scale *
attention(identity tokens, video)`` to the video stream. Those tokens are a condition that enters unchanged, and
the perceiver layers are outside the block list. The feature cache holds what the blocks return (before the
identity is added, as a block's output is defined in the official algorithm); the stream that enters the next
block, identity included, is what is blended with the cache mean.
"""

from __future__ import annotations

import torch

from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family


def _grid(transformer, args, kwargs):
    hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    frames, _, height, width = hidden.shape[1:]  # (B, F, C, H, W), no temporal patches
    p = transformer.config.patch_size
    return frames, height // p, width // p


# --- tiny configuration ------------------------------------------------------------------------------------------


def _tiny_transformer():
    from diffusers import ConsisIDTransformer3DModel

    # Rotary positions, doubled input channels (noise + image latents) and the face modules, as released. The
    # perceiver's key width is two thirds of the hidden width (32 -> 21), which the extractor's output must match.
    return ConsisIDTransformer3DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=8, out_channels=4, time_embed_dim=8,
        text_embed_dim=16, num_layers=4, sample_width=8, sample_height=8, sample_frames=9, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=16, use_rotary_positional_embeddings=True,
        is_train_face=True, is_kps=False, cross_attn_interval=2, cross_attn_dim_head=8, cross_attn_num_heads=2,
        LFE_id_dim=8, LFE_vit_dim=8, LFE_depth=2, LFE_dim_head=4, LFE_num_heads=2, LFE_num_id_token=2,
        LFE_num_querie=4, LFE_output_dim=21, LFE_ff_mult=2, LFE_num_scale=2,
    )


def _tiny_inputs(g, b):
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    # 3 latent frames of 8x8 (patch 2 -> 48 video tokens) + 16 text tokens, and random face features
    rotary = get_3d_rotary_pos_embed(embed_dim=16, crops_coords=((0, 0), (4, 4)), grid_size=(4, 4), temporal_size=3)
    return {
        "hidden_states": torch.randn(b, 3, 8, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 16, 16, generator=g),
        "timestep": torch.tensor([500] * b),
        "image_rotary_emb": rotary,
        "id_cond": torch.randn(b, 8, generator=g),
        "id_vit_hidden": [torch.randn(b, 5, 8, generator=g) for _ in range(2)],
    }


CONSISID = register_family(Family(
    name="ConsisID",
    transformers=("ConsisIDTransformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states", "encoder_hidden_states"), outputs=(0, 1)),),
    attention=AttentionFacts(captured="attn1", text_first=True, grid=_grid, processors=("CogVideoXAttnProcessor2_0",)),
    tiny=TinyModel("ConsisID", _tiny_transformer, _tiny_inputs, 4),
    notes="video + text (joint attention); the face adapter's identity tokens are a condition",
))

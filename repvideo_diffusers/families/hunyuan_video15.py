"""HunyuanVideo 1.5: `HunyuanVideo15Transformer3DModel` (text-to-video and image-to-video checkpoints).

Gated: the dual-stream ``transformer_blocks`` in order, the only block list the video stream flows through.
Blended: video and the joint text stream (each block takes and returns both). The text stream is one sequence built
before the loop: the SigLIP image tokens, the ByT5 glyph tokens and the Qwen2.5-VL tokens, valid tokens first; it
flows from block to block as the second stream of the joint attention, so it is blended like the video.
Not gated: the token refiner's ``refiner_blocks`` (``context_embedder.token_refiner``), which refine the Qwen tokens
alone before the main loop and produce the text stream's starting point, not a stream of the main loop.
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family

_JOINT = ("hidden_states", "encoder_hidden_states")


def _tiny_transformer():
    from diffusers import HunyuanVideo15Transformer3DModel

    # in_channels = latents (4) + conditioning latents (4) + mask (1), as the pipelines concatenate them.
    return HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=4,
        num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=16,
        image_embed_dim=16, rope_axes_dim=(2, 4, 2),
    )


def _tiny_inputs(g, b):
    mask = torch.ones(b, 12, dtype=torch.bool)
    mask[0, 9:] = False  # padded Qwen tokens: the attention mask must be respected with and without RepVideo
    mask_2 = torch.ones(b, 6, dtype=torch.bool)
    mask_2[-1, 4:] = False  # padded ByT5 tokens
    return {
        "hidden_states": torch.randn(b, 9, 3, 8, 8, generator=g),
        "timestep": torch.tensor([500.0] * b),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "encoder_attention_mask": mask,
        "encoder_hidden_states_2": torch.randn(b, 6, 16, generator=g),
        "encoder_attention_mask_2": mask_2,
        "image_embeds": torch.randn(b, 4, 16, generator=g),  # image-to-video: the image tokens are attended
    }


HUNYUAN_VIDEO_15 = register_family(Family(
    name="HunyuanVideo-1.5",
    transformers=("HunyuanVideo15Transformer3DModel",),
    blocks=(BlockList("transformer_blocks", _JOINT, outputs=(0, 1)),),
    attention=AttentionFacts(
        captured="attn", text_first=False, grid=channels_first_grid,
        # AttnProcessor2_0: the token refiner's self-attention (not captured, but routed with the rest).
        processors=("HunyuanVideo15AttnProcessor2_0", "AttnProcessor2_0"),
    ),
    tiny=TinyModel("HunyuanVideo-1.5", _tiny_transformer, _tiny_inputs, 4),
    notes="video + text (image, ByT5 and Qwen tokens in joint attention); the token refiner is not gated",
))

"""SANA-WM stage-2 refiner: `SanaWMLTX2RefinerTransformer3DModel`.

The LTX-2 video DiT (same blocks and weights as `LTX2VideoTransformer3DModel`) run video-only and chunk-causally by
`SanaWMLTX2Refiner`: one forward call refines one block of latent frames, whose self-attention also attends to the
keys and values of an attention sink and of the recently refined frames, held in an explicit KV cache.

Gated: ``transformer_blocks`` in order (`SanaWMLTX2RefinerTransformerBlock`). Blended: the video stream only
(``hidden_states``); the audio branches of the LTX-2 checkpoint are not run. The text enters every block unchanged
through cross-attention, and the cached sink/history keys and values enter the self-attention unchanged: conditions,
not streams. The feature cache of RepVideo is per forward call, so it spans the blocks of one window, never windows.

No attention facts: a forward call receives packed tokens and precomputed rotary embeddings, not the token grid, so a
capture could not tell which key is which frame. No gradient checkpointing: the model does not support it.
"""

from __future__ import annotations

import torch

from ._registry import BlockList, Family, TinyModel, register_family

# The tiny forward: one window of 2 latent frames of 4 x 4 tokens.
_FRAMES, _HEIGHT, _WIDTH = 2, 4, 4


def _tiny_transformer():
    from diffusers import SanaWMLTX2RefinerTransformer3DModel

    return SanaWMLTX2RefinerTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=4, caption_channels=16,
        rope_double_precision=False, rope_type="split",
    )


def _tiny_inputs(g, b):
    # Frames 1 and 2 of the video (frame 0 would be the sink): the refiner passes absolute frame positions.
    rope = _tiny_transformer().build_rotary_emb_for_absolute_positions(
        batch_size=b, frame_positions=[1, 2], height=_HEIGHT, width=_WIDTH, device=torch.device("cpu"), fps=16.0)
    tokens = _FRAMES * _HEIGHT * _WIDTH
    mask = torch.ones(b, 12)
    mask[0, 9:] = 0  # padded text
    return {
        "hidden_states": torch.randn(b, tokens, 4, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.full((b, tokens), 725.0),  # sigma 0.725 x timestep_scale_multiplier
        "video_rotary_emb": rope,
        "encoder_attention_mask": mask,
    }


SANA_WM_REFINER = register_family(Family(
    name="SANA-WM-Refiner",
    transformers=("SanaWMLTX2RefinerTransformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states",)),),
    tiny=TinyModel("SANA-WM-Refiner", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text and the sink/history KV cache are conditions of every block)",
))

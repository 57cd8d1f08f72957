"""MiniMax-H3: `MiniMaxH3Transformer3DModel`, a joint video + audio diffusion transformer.

A video DiT: it denoises video latents (and a soundtrack) with full self-attention over one packed 1-D sequence
that holds, row by row, the text condition, the keyframe / reference conditioning rows, the audio rows and the
target video rows. Gated: ``transformer_blocks`` in order. Blended: that packed sequence, the single stream every
block takes and returns, so the video, audio and text rows are blended together (each row with the same row of the
cached outputs: the layout is fixed for the whole forward call). Not gated: the token refiner's
``refiner_blocks`` (``token_refiner``), which refine the text rows alone before they are packed.

No attention facts: capture picks one query token per latent frame on a ``(t, h, w)`` grid of contiguous video
tokens, but the packed sequence places the target video after the text, conditioning and audio rows, and the
forward's inputs do not say how many of the video rows are conditioning. Capture needs the sequence positions of the
target video tokens, which `AttentionFacts` cannot state today.
"""

from __future__ import annotations

import torch

from ._registry import BlockList, Family, TinyModel, register_family

_TEXT, _FRAMES, _HEIGHT, _WIDTH, _AUDIO = 6, 3, 4, 4, 5  # tiny packed layout: rows of each modality


def _tiny_transformer():
    from diffusers import MiniMaxH3Transformer3DModel

    # head_dim 16 >= 2 * 3 * rope_freq_dim rotated channels; heads x head_dim is wider than hidden_size, as released.
    return MiniMaxH3Transformer3DModel(
        num_attention_heads=2, attention_head_dim=16, hidden_size=16, num_layers=4, num_refiner_layers=1,
        ffn_dim=32, in_channels=4, audio_in_channels=4, patch_size=(1, 2, 2), text_dim=16, freq_dim=16,
        time_embed_hidden_dim=16, time_embed_dim=8, rope_freq_dim=2,
    )


def _tiny_inputs(g, b):
    # The pipeline's `[text | target audio | target video]` layout (a text-to-video-and-audio request), built here.
    video = _FRAMES * _HEIGHT * _WIDTH
    length = _TEXT + _AUDIO + video
    text = torch.arange(0, _TEXT)
    audio = torch.arange(_TEXT, _TEXT + _AUDIO)
    video_rows = torch.arange(_TEXT + _AUDIO, length)
    tags = torch.zeros(length, dtype=torch.long)
    tags[text], tags[audio] = 1, 2
    positions = torch.zeros(length, 3)
    positions[text, 0] = torch.arange(_TEXT, dtype=torch.float32)
    positions[audio, 0] = _TEXT + torch.arange(_AUDIO, dtype=torch.float32)
    t, h, w = torch.meshgrid(torch.arange(_FRAMES), torch.arange(_HEIGHT), torch.arange(_WIDTH), indexing="ij")
    positions[video_rows] = torch.stack([t.flatten() + _TEXT, h.flatten(), w.flatten()], dim=-1).float()
    timestep_indices = torch.zeros(length, dtype=torch.long)
    timestep_indices[audio] = 1  # video and audio rows at different noise levels, as the pipeline steps them
    return {
        "hidden_states": torch.randn(b, video, 4 * 2 * 2, generator=g),
        "audio_hidden_states": torch.randn(b, _AUDIO, 4, generator=g),
        "encoder_hidden_states": torch.randn(b, _TEXT, 16, generator=g),
        "timestep": torch.tensor([0.6, 0.3]),
        "timestep_indices": timestep_indices,
        "token_tags": tags,
        "position_ids": positions,
        "video_indices": video_rows,
        "audio_indices": audio,
        "text_indices": text,
    }


MINIMAX_H3 = register_family(Family(
    name="MiniMax-H3",
    transformers=("MiniMaxH3Transformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states",)),),
    tiny=TinyModel("MiniMax-H3", _tiny_transformer, _tiny_inputs, 4),
    notes="the packed sequence (text, conditioning, audio and video rows in one stream); the token refiner is not "
          "gated",
))

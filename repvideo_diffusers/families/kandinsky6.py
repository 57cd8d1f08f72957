"""Kandinsky 6 (text/image-to-video-and-audio): `Kandinsky6Transformer3DModel`.

Gated: ``visual_transformer_blocks`` in order (`Kandinsky6FusedTransformerDecoderBlock`: video and audio
self-attention, cross-attention of each to its own text branch, video-to-audio and audio-to-video cross-attention,
feed-forward). Blended: the video stream and the audio stream. The fused block takes and returns ``(vis, aud)``:
both flow from block to block and exchange information inside every block, so each has its own feature cache mean,
blended with the same gate (as LTX-2's audio-visual blocks).

Without audio (`Kandinsky6TI2VAPipeline(..., sample_audio=False)`, or a forward call without
``audio_hidden_states``) the blocks receive and return ``aud=None``: that call blends and caches the video stream
alone.

Not gated: ``video_text_transformer_blocks`` and ``audio_text_transformer_blocks``. They run before the fused loop on
the text alone (one text refiner per modality); their outputs enter every fused block unchanged through
cross-attention, so the text is a condition, not a stream.

The video stream is a flat token sequence in one fixed frame-major order for the whole loop (with image
conditioning the reference frame is one more frame at the end), the audio stream one token per audio latent frame,
so the cache averages the same tokens as every other family.

Attention facts: every attention of the model is `Kandinsky6AttnProcessor`, which computes through diffusers'
``dispatch_attention_fn`` (PyTorch SDPA with the default ``native`` backend); the video self-attention that capture
records sits one level down in each gated block (``video_dec_block.self_attention``).
"""

from __future__ import annotations

import torch

from ._grids import channels_last_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family

# The architecture flags of the released checkpoints (their `transformer/config.json`): padded text with a mask,
# rotary embeddings in the cross-modal attention, cross-modal residual gates, the fixed modulation, and two visual
# token types (video frames, the appended reference frame of image-to-video).
RELEASED_CONFIG = dict(text_token_padding=True, ca_rope=True, cross_gates=True, fix_modulation=True,
                       visual_cond=True, visual_token_type_num_embeddings=2)


def _tiny_transformer(**config):
    """A 4-block tiny model: video and audio 2 heads x 8 each, text width 16, pooled text width 8, 4 latent
    channels for video and audio; the released architecture flags unless ``config`` overrides them."""

    def make():
        from diffusers import Kandinsky6Transformer3DModel

        return Kandinsky6Transformer3DModel(**{
            **dict(in_visual_dim=4, out_visual_dim=4, in_text_dim=16, in_text_dim2=8, time_dim=16,
                   patch_size=(1, 2, 2), model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=4,
                   axes_dims=(4, 2, 2), in_audio_dim=4, out_audio_dim=4),
            **RELEASED_CONFIG,
            **config,
        })

    return make


def _tiny_inputs(audio: bool = True, visual_cond: bool = True):
    def make(g, b):
        # 3 latent frames of 8 x 8 (patch 1 x 2 x 2: 3 x 4 x 4 video tokens), 10 audio latent frames, 12 text tokens;
        # with `visual_cond` the input adds the (unused) condition latent and its mask as channels (2 x 4 + 1)
        mask = torch.ones(b, 12, dtype=torch.bool)
        mask[0, 9:] = False  # padded text: the mask must be respected with and without RepVideo
        inputs = {
            "hidden_states": torch.randn(b, 3, 8, 8, 9 if visual_cond else 4, generator=g),
            "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
            "pooled_projections": torch.randn(b, 8, generator=g),
            "timestep": torch.tensor([500.0] * b),
            "encoder_attention_mask": mask,
        }
        if audio:
            inputs["audio_hidden_states"] = torch.randn(b, 10, 4, generator=g)
        return inputs

    return make


KANDINSKY6 = register_family(Family(
    name="Kandinsky6",
    transformers=("Kandinsky6Transformer3DModel",),
    blocks=(BlockList("visual_transformer_blocks", ("vis", "aud"), outputs=(0, 1)),),
    # The video self-attention sits one level down in each fused block.
    attention=AttentionFacts(captured="video_dec_block.self_attention", text_first=False, grid=channels_last_grid,
                             processors=("Kandinsky6AttnProcessor",)),
    tiny=TinyModel("Kandinsky6", _tiny_transformer(), _tiny_inputs(), 4),
    notes="video and audio (the fused blocks take and return both; video alone when no audio is sampled; the text "
          "refiner blocks run before the loop, text is a cross-attention condition)",
))

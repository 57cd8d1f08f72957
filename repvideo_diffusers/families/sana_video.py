"""Sana-Video: `SanaVideoTransformer3DModel`.

Gated: ``transformer_blocks`` in order. Blended: the video stream only; the text (Gemma 2 embeddings) enters every
block unchanged through cross-attention, so it is a condition, not a stream. Each block reshapes its tokens to
``(frames, height, width)`` inside its feed-forward (a temporal convolution) and back, so block inputs and outputs
keep one layout and the cache averages the same tokens in every block. With a ControlNet, its residual is added to a
block's output after the block returns: the cache holds the block's own output, the next block's input includes the
residual (then is blended).

`SanaVideoPipeline` (text-to-video) and `SanaImageToVideoPipeline` (image-to-video) drive it.

No attention facts: the self-attention is Sana's linear attention (`SanaLinearAttnProcessor3_0`: ReLU feature maps
and matrix products, no softmax), which never calls ``F.scaled_dot_product_attention`` and has no attention map to
capture; only the cross-attention is SDPA. No training facts (left out, not impossible: the text-to-video pipeline's
scheduler is a flow-prediction `DPMSolverMultistepScheduler`, which `repvideo train` handles; but the pipelines name
their frame count ``frames``, not ``num_frames`` as `repvideo train`'s validation and `repvideo generate --frames`
pass it, and bin height and width to their 480p buckets unless ``use_resolution_binning=False``).
"""

from __future__ import annotations

import torch

from ._registry import BlockList, Family, TinyModel, register_family


def _tiny_transformer():
    from diffusers import SanaVideoTransformer3DModel

    return SanaVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=4,
        num_cross_attention_heads=2, cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16,
        patch_size=(1, 2, 2), rope_max_seq_len=32,
    )


def _tiny_inputs(g, b):
    mask = torch.ones(b, 12)
    mask[0, 9:] = 0  # padded text: the cross-attention mask must be respected with and without RepVideo
    return {
        "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "timestep": torch.tensor([500] * b),
        "encoder_attention_mask": mask,
    }


SANA_VIDEO = register_family(Family(
    name="Sana-Video",
    transformers=("SanaVideoTransformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states",)),),
    tiny=TinyModel("Sana-Video", _tiny_transformer, _tiny_inputs, 4),
    notes="video (text is a cross-attention condition); linear self-attention, so no attention capture",
))

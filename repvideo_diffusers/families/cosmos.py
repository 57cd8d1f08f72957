"""Cosmos (Predict 1.0 text2world / video2world, Predict 2.0, Predict / Transfer 2.5): `CosmosTransformer3DModel`.

Gated: ``transformer_blocks`` in order. Blended: the video stream only. The text (and, in 2.5, the image context)
enters every block unchanged through cross-attention (``attn2``), so it is a condition, not a stream. So are the
inputs every block receives besides the stream: the learnable positional embedding a block adds to its input
(1.0) and the control residual a block adds to its output (Transfer 2.5, every ``controlnet_block_every_n``-th
block); the feature cache holds what the blocks return, that residual included, as the block's output is defined.
The condition mask and padding mask are concatenated to the latent channels before the patch embedding.

The tiny configurations do not concatenate the padding mask (``concat_padding_mask=False``): the released models
do, and diffusers resizes it with torchvision there, which is an optional dependency. The block stack is the same.
The other released configurations are `VARIANTS` (not `Family.variants`, which the shared semantics tests take to
be joint-attention CogVideoX-style models).
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, register_family

_WIDTH = 24  # 2 heads x 12: Cosmos' rotary embedding gives a third of each head's width to h and w, in pairs


def _transformer(**config):
    def make():
        from diffusers import CosmosTransformer3DModel

        return CosmosTransformer3DModel(**{
            "in_channels": 4, "out_channels": 4, "num_attention_heads": 2, "attention_head_dim": 12, "num_layers": 4,
            "mlp_ratio": 2.0, "text_embed_dim": 16, "adaln_lora_dim": 4, "max_size": (4, 16, 16),
            "patch_size": (1, 2, 2), "concat_padding_mask": False, **config,
        })

    return make


def _inputs(condition_mask=False, per_frame_timestep=False, image_context=False, controlnet=False):
    def make(g, b):
        # 3 latent frames of 8x8 (patch 1x2x2 -> 48 video tokens) + 12 text tokens
        inputs = {
            "hidden_states": torch.randn(b, 4, 3, 8, 8, generator=g),
            "timestep": torch.full((b,), 0.5),
            "encoder_hidden_states": torch.randn(b, 12, 20 if image_context else 16, generator=g),
            "fps": 24,
            "padding_mask": torch.zeros(1, 1, 8, 8),  # as the pipelines pass it (used with concat_padding_mask)
        }
        if condition_mask:  # video2world: the first latent frame is given
            mask = torch.zeros(b, 1, 3, 8, 8)
            mask[:, :, 0] = 1.0
            inputs["condition_mask"] = mask
        if per_frame_timestep:  # Predict 2.0: one timestep per latent frame, the conditioning frame's apart
            timestep = torch.full((b, 1, 3, 1, 1), 0.5)
            timestep[:, :, 0] = 0.01
            inputs["timestep"] = timestep
        if image_context:
            inputs["encoder_hidden_states"] = (inputs["encoder_hidden_states"], torch.randn(b, 4, 8, generator=g))
        if controlnet:
            inputs["block_controlnet_hidden_states"] = [torch.randn(b, 48, _WIDTH, generator=g) for _ in range(2)]
        return inputs

    return make


# The other released configurations of the class, for the tests.
VARIANTS = {
    "Cosmos-1.0-Video2World": TinyModel("Cosmos", _transformer(in_channels=5), _inputs(condition_mask=True), 4),
    "Cosmos-2.0-Video2World": TinyModel(
        "Cosmos", _transformer(in_channels=5, extra_pos_embed_type=None, rope_scale=(1.0, 3.0, 3.0)),
        _inputs(condition_mask=True, per_frame_timestep=True), 4,
    ),
    # Predict 2.5 with image context: projected text, and an image-context branch in the cross-attention.
    "Cosmos-2.5-ImageContext": TinyModel(
        "Cosmos", _transformer(in_channels=5, extra_pos_embed_type=None, use_crossattn_projection=True,
                               crossattn_proj_in_channels=20, encoder_hidden_states_channels=16,
                               img_context_dim_in=8, img_context_num_tokens=4, img_context_dim_out=_WIDTH),
        _inputs(condition_mask=True, image_context=True), 4,
    ),
    # Transfer 2.5: control residuals added inside every second block.
    "Cosmos-2.5-Transfer": TinyModel(
        "Cosmos", _transformer(in_channels=5, extra_pos_embed_type=None, controlnet_block_every_n=2),
        _inputs(condition_mask=True, controlnet=True), 4,
    ),
}


COSMOS = register_family(Family(
    name="Cosmos",
    transformers=("CosmosTransformer3DModel",),
    blocks=(BlockList("transformer_blocks", ("hidden_states",)),),
    attention=AttentionFacts(captured="attn1", text_first=False, grid=channels_first_grid,
                             processors=("CosmosAttnProcessor2_0", "CosmosAttnProcessor2_5")),
    # Predict 1.0 text2world: learnable positional embedding.
    tiny=TinyModel("Cosmos", _transformer(), _inputs(), 4),
    notes="video (text is a cross-attention condition)",
))

"""AnyFlow FAR (chunk-wise autoregressive flow-map model): `AnyFlowFARTransformer3DModel`.

Gated: ``blocks`` in order. Blended: the video stream only, which here is one token sequence holding the
FAR-compressed context frames (patched by ``far_patch_embedding``) followed by the full-resolution frames (and, in
training with clean context, a clean copy of them). The sequence keeps that one layout from block to block, so the
cache averages the same tokens in every block. Text enters every block unchanged through cross-attention: a condition.

All three forward paths run the same blocks, and RepVideo gates each call as one forward: the causal training
rollout (the whole sequence under a chunk-causal mask), the KV-cache prefill (``AnyFlowFARPipeline.encode_kv_cache``
runs the generated chunks through the blocks to write each block's keys and values) and the autoregressive step
(the current chunk only, attending to the cached keys and values). The blend is token by token, so the keys a block
caches for a chunk in the prefill come from the same blended stream that block would see in a full causal pass: the
cached context and the chunk being generated are gated alike.

No attention facts: the causal self-attention (`AnyFlowCausalAttnProcessor`) runs on diffusers' ``flex`` backend
with a `BlockMask` (it refuses every other backend), never through ``F.scaled_dot_product_attention``, so it can be
neither routed nor captured. No training facts: the pipeline's `FlowMapEulerDiscreteScheduler` has no objective in
`repvideo train`, and the causal rollout needs chunk partitions and clean context that `TrainingFacts` cannot state.
"""

from __future__ import annotations

import torch

from ._registry import BlockList, Family, TinyModel, register_family


def _tiny_transformer():
    from diffusers import AnyFlowFARTransformer3DModel

    # full_chunk_limit=2 with three one-frame chunks: the first chunk is FAR-compressed context, so the tiny model
    # runs both patch embeddings and the mixed (compressed + full) token sequence.
    return AnyFlowFARTransformer3DModel(
        patch_size=(1, 2, 2), compressed_patch_size=(1, 4, 4), full_chunk_limit=2, num_attention_heads=2,
        attention_head_dim=8, in_channels=4, out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=4,
        rope_max_seq_len=32, chunk_partition=(1, 1, 1),
    )


def _tiny_inputs(g, b):
    frames = 3
    return {
        "hidden_states": torch.randn(b, frames, 4, 8, 8, generator=g),  # (B, F, C, H, W)
        "timestep": torch.full((b, frames), 600.0),
        "r_timestep": torch.full((b, frames), 300.0),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "chunk_partition": [1, 1, 1],  # the causal training rollout: 4 compressed + 2 x 16 full tokens
    }


ANYFLOW_FAR = register_family(Family(
    name="AnyFlow-FAR",
    transformers=("AnyFlowFARTransformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    tiny=TinyModel("AnyFlow-FAR", _tiny_transformer, _tiny_inputs, 4),
    notes="video: compressed context + current chunk as one sequence (text is a cross-attention condition); "
          "KV-cache prefill and autoregressive steps gated alike",
))

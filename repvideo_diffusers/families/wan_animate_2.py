"""Wan-Animate-2 (character animation with an in-context reference): `WanAnimate2Transformer3DModel`.

Gated: ``blocks`` in order. Blended: the video stream only. Text and the CLIP image tokens enter every block
unchanged through cross-attention, and the per-sample conditioning latents are concatenated to the input channels
before the patch embedding: conditions, not streams.

The model runs in two kinds of forward call, and RepVideo gates each as one forward of the same blocks:

* ``kv_cache_mode="extract"`` (the reference pass, once per segment): the reference latents flow through the blocks
  as the video stream, are blended like any stream, and each block writes the keys and values of its self-attention
  input to the `WanAnimate2KVCache`. With gates on, the cached reference keys and values are those of the blended
  reference stream, exactly as the model with RepVideo computes them.
* ``kv_cache_mode="cached"`` (every denoising step): the generation latents are the video stream; each block's
  cached reference keys and values enter its self-attention as a per-block condition, unchanged by the blend.

The unconditional branch (``is_uncondtion=True``) skips block 9: that block neither blends nor adds to the cache,
so block 10 blends with the cache as it stood after block 8 (its gate index stays 10).

Only the modular `WanAnimate2ModularPipeline` (``modular_pipelines/wan_animate_2``) drives it; it is no
`DiffusionPipeline`, so ``pipe.enable_repvideo`` does not exist there: use ``apply_repvideo(pipe.transformer)``.

No attention facts: in the generation pass the self-attention packs generation and reference tokens under a flex
`BlockMask` and always calls diffusers' ``flex`` backend, never ``F.scaled_dot_product_attention``. No training facts:
a clip needs a reference pass, conditioning latents and CLIP image features that `TrainingFacts` cannot state.
"""

from __future__ import annotations

import torch

from ._registry import BlockList, Family, TinyModel, register_family

NUM_BLOCKS = 4
CLIP_DIM = 1280  # `MLPProj(1280, dim)`: the CLIP image features the released model takes


def _tiny_transformer():
    from diffusers import WanAnimate2Transformer3DModel

    return WanAnimate2Transformer3DModel(
        patch_size=(1, 2, 2), text_len=16, in_dim=8, dim=16, ffn_dim=32, freq_dim=16, text_dim=16, out_dim=4,
        num_heads=2, num_layers=NUM_BLOCKS, use_img_emb=True,
    )


def _common_inputs(g, b):
    return {
        "timestep": torch.tensor([500.0] * b),
        "encoder_hidden_states": [torch.randn(12, 16, generator=g) for _ in range(b)],  # padded to text_len inside
        "condition_latents": [torch.randn(4, 2, 8, 8, generator=g) for _ in range(b)],
        "encoder_hidden_states_image": torch.randn(b, 4, CLIP_DIM, generator=g),
        "seq_len": 32,  # 2 latent frames x 4 x 4 tokens
    }


def tiny_reference_inputs(g, b):
    """The reference pass (``kv_cache_mode="extract"``): dense self-attention over the reference tokens."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    return {
        "hidden_states": [torch.randn(4, 2, 8, 8, generator=g) for _ in range(b)],
        **_common_inputs(g, b),
        "kv_cache": WanAnimate2KVCache(NUM_BLOCKS),
        "kv_cache_mode": "extract",
        "offset_grid_sizes": torch.tensor([[2, 4, 4]] * b),
    }


def _tiny_inputs(g, b):
    """A denoising step (``kv_cache_mode="cached"``): the generation tokens attend to each block's cached reference
    keys and values (random here, as a reference pass would have left them) through the flex block mask."""
    from diffusers.models.transformers.transformer_wan_animate_2 import WanAnimate2KVCache

    inputs = {"hidden_states": [torch.randn(4, 2, 8, 8, generator=g) for _ in range(b)], **_common_inputs(g, b)}
    kv_cache = WanAnimate2KVCache(NUM_BLOCKS)
    for layer in kv_cache.layer_caches:  # reference keys / values before rotary: (batch, 32 tokens, heads, head dim)
        layer.store(torch.randn(b, 32, 2, 8, generator=g), torch.randn(b, 32, 2, 8, generator=g))
    inputs.update({
        "kv_cache": kv_cache,
        "kv_cache_mode": "cached",
        "reference_grid_sizes": torch.tensor([[2, 4, 4]] * b),
        "origin_len": 5,  # pixel frames of the whole video: 2 latent frames
        "origin_area": [64, 64],  # pixel size of the whole video: 4 x 4 tokens
    })
    return inputs


WAN_ANIMATE_2 = register_family(Family(
    name="Wan-Animate-2",
    transformers=("WanAnimate2Transformer3DModel",),
    blocks=(BlockList("blocks", ("hidden_states",)),),
    tiny=TinyModel("Wan-Animate-2", _tiny_transformer, _tiny_inputs, NUM_BLOCKS),
    notes="video, in the reference pass and every denoising step (text, CLIP image and cached reference keys / "
          "values are per-block conditions)",
))

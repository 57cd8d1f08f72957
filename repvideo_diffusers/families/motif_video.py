"""Motif-Video: `MotifVideoTransformer3DModel`.

Gated: the dual-stream ``transformer_blocks`` then the *encoder* part of ``single_transformer_blocks`` (all of them
but the last ``num_decoder_layers``), one sequence with one feature cache, as HunyuanVideo's double- then
single-stream blocks. Blended: video and text (every one of these blocks takes and returns both; with image
conditioning the image tokens lead the text stream and flow with it). The blocks' text cross-attention
(``cross_attn``, when enabled) reads the same joint text stream, so it adds no stream of its own.

Not gated: the DDT decoder, the last ``num_decoder_layers`` single-stream blocks (Motif-Video 2B, as documented: 12
dual-stream, 16 single-stream and 8 decoder layers). It is a second network with streams of its own: its video
stream is a fresh copy of the embedded latents taken before the first block, and its second stream is the encoder's
output video (video-shaped, where the cache's second stream is text), so no blend with the encoder's feature cache
means what RepVideo's does. The family therefore stops the gated sequence where the decoder starts; with
``num_decoder_layers=0`` every single-stream block is gated.

Training (``repvideo train``) feeds the transformer as `MotifVideoPipeline` does for text-to-video.
"""

from __future__ import annotations

import torch

from ._grids import channels_first_grid
from ._registry import AttentionFacts, BlockList, Family, TinyModel, TrainingFacts, register_family

_JOINT = ("hidden_states", "encoder_hidden_states")


class _EncoderBlocksFamily(Family):
    """A `Family` whose ``single_transformer_blocks`` list ends before the model's ``num_decoder_layers`` decoder
    blocks (the registry's `BlockList` names whole lists; Motif's forward splits one list in two)."""

    def block_lists(self, transformer):
        decoder = int(getattr(transformer.config, "num_decoder_layers", 0) or 0)
        for block_list in self.blocks:
            blocks = list(getattr(transformer, block_list.attribute))
            if block_list.attribute == "single_transformer_blocks" and decoder:
                blocks = blocks[: len(blocks) - decoder]
            for block in blocks:
                yield block_list, block


def _encode_video(pipe, video, generator):
    vae = pipe.vae
    latents = vae.encode(video.to(vae.dtype)).latent_dist.sample(generator=generator)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    return ((latents - mean) / std)[0]  # the inverse of MotifVideoPipeline's decode normalisation


def _encode_prompt(pipe, text, max_sequence_length):
    embeds, _, mask, _ = pipe.encode_prompt(text, max_sequence_length=max_sequence_length, device=torch.device("cpu"))
    return {"prompt_embeds": embeds[0], "prompt_attention_mask": mask[0]}


def _forward_kwargs(pipe, noisy, batch, timestep):
    # Text-to-video, as MotifVideoPipeline calls it: no first-frame conditioning (zero condition latents and mask
    # concatenated to the noisy latents) and no image embeddings.
    batch_size, _, frames, height, width = noisy.shape
    mask = noisy.new_zeros(batch_size, 1, frames, height, width)
    return {"hidden_states": torch.cat([noisy, torch.zeros_like(noisy), mask], dim=1), "timestep": timestep,
            "encoder_hidden_states": batch["prompt_embeds"],
            "encoder_attention_mask": batch["prompt_attention_mask"].bool(), "return_dict": False}


def _tiny_transformer(num_decoder_layers: int = 2):
    from diffusers import MotifVideoTransformer3DModel

    # in_channels = latents (4) + conditioning latents (4) + mask (1), as the pipelines concatenate them. The
    # released layout in small: dual-stream, encoder single-stream and decoder single-stream blocks, shared text
    # cross-attention in the dual and encoder blocks, image conditioning.
    return MotifVideoTransformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_single_layers=2 + num_decoder_layers, num_decoder_layers=num_decoder_layers, patch_size=2,
        patch_size_t=1, text_embed_dim=16, image_embed_dim=16, rope_axes_dim=(2, 4, 2),
        enable_text_cross_attention_dual=True, enable_text_cross_attention_single=True,
    )


def _tiny_inputs(g, b):
    mask = torch.ones(b, 12, dtype=torch.bool)
    mask[0, 9:] = False  # padded text: the attention mask must be respected with and without RepVideo
    return {
        "hidden_states": torch.randn(b, 9, 3, 8, 8, generator=g),
        "timestep": torch.tensor([500] * b),
        "encoder_hidden_states": torch.randn(b, 12, 16, generator=g),
        "encoder_attention_mask": mask,
        "image_embeds": torch.randn(b, 3, 16, generator=g),
    }


MOTIF_VIDEO = register_family(_EncoderBlocksFamily(
    name="Motif-Video",
    transformers=("MotifVideoTransformer3DModel",),
    blocks=(
        BlockList("transformer_blocks", _JOINT, outputs=(0, 1)),
        BlockList("single_transformer_blocks", _JOINT, outputs=(0, 1)),  # the decoder blocks excluded, see above
    ),
    attention=AttentionFacts(
        captured="attn", text_first=False, grid=channels_first_grid,
        processors=("MotifVideoAttnProcessor2_0", "MotifVideoCrossAttnProcessor2_0"),
    ),
    training=TrainingFacts(
        default_size=lambda pipe: (736, 1280, 121),  # MotifVideoPipeline.__call__ defaults
        encode_video=_encode_video, encode_prompt=_encode_prompt, max_sequence_length=lambda pipe: 512,
        forward_kwargs=_forward_kwargs,
    ),
    tiny=TinyModel("Motif-Video", _tiny_transformer, _tiny_inputs, 4),
    notes="video + text; dual- then encoder single-stream blocks as one sequence (the DDT decoder blocks are not "
          "gated: their streams are their own)",
))

"""Prompt encoding shared by families whose transformer takes the text padding mask (LTX-Video, Mochi)."""

from __future__ import annotations

import torch


def masked_encode_prompt(pipe, text, max_sequence_length):
    """``{"prompt_embeds", "prompt_attention_mask"}`` of one caption, from the pipeline's own `encode_prompt`."""
    embeds, mask, _, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False,
                                            max_sequence_length=max_sequence_length, device=torch.device("cpu"))
    return {"prompt_embeds": embeds[0], "prompt_attention_mask": mask[0]}

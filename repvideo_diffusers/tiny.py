"""The embedded tiny CogVideoX pipeline: random weights made deterministically, tokenizer built in-process.

It exists so that ``repvideo generate``, the notebooks and the tests run on a fresh machine with no network in
seconds, through the same ``from_pretrained`` loading code as a real model: the pipeline is built once, saved into
a local cache folder, and loaded back from there.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .utils.io import staged_folder

TINY_MODEL_NAME = "repvideo-tiny-cogvideox"
_TINY_VERSION = "2"  # bump when the recipe below changes, so stale caches are rebuilt

TINY_HEIGHT, TINY_WIDTH, TINY_FRAMES, TINY_TEXT_LENGTH = 64, 96, 9, 16


def build_tokenizer():
    """A small T5 tokenizer (unigram over printable ASCII), built with `tokenizers`: no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = ["<pad>", "</s>", "<unk>", "\u2581"] + [chr(c) for c in range(33, 127)]
    tokenizer = Tokenizer(models.Unigram([(piece, -float(len(piece))) for piece in vocab], unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(
        tokenizer_object=tokenizer, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=0,
        model_max_length=512,
    )


def build_tiny_transformer(num_layers: int = 4, seed: int = 0):
    """A 4-block `CogVideoXTransformer3DModel` (2 heads x 8, text width 16) with seeded random weights.

    Example:
        ```python
        >>> from repvideo_diffusers.tiny import build_tiny_transformer
        >>> len(build_tiny_transformer().transformer_blocks)
        4

        ```
    """
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=4,
        time_embed_dim=8,
        text_embed_dim=16,
        num_layers=num_layers,
        sample_width=TINY_WIDTH // 8,
        sample_height=TINY_HEIGHT // 8,
        sample_frames=TINY_FRAMES,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=TINY_TEXT_LENGTH,
        norm_eps=1e-5,
    )


def build_tiny_pipeline(seed: int = 0):
    """Build the tiny CogVideoX pipeline in memory (deterministic for a given `seed`)."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXPipeline
    from transformers import T5Config, T5EncoderModel

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                 relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        sample_height=TINY_HEIGHT,
        sample_width=TINY_WIDTH,
    )
    transformer = build_tiny_transformer(seed=seed + 2)
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear", prediction_type="v_prediction", rescale_betas_zero_snr=True,
        timestep_spacing="trailing", clip_sample=False, snr_shift_scale=1.0,
    )
    return CogVideoXPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


def tiny_pipeline_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The local folder of the tiny pipeline, written on first use (atomically) and reused afterwards."""
    root = Path(cache_dir or os.environ.get("REPVIDEO_CACHE") or Path.home() / ".cache" / "repvideo-diffusers")
    folder = root / f"{TINY_MODEL_NAME}-v{_TINY_VERSION}"
    if (folder / "model_index.json").is_file():
        return folder
    from filelock import FileLock  # comes with huggingface_hub

    root.mkdir(parents=True, exist_ok=True)
    # Several processes (accelerate launch, pytest-xdist) may ask at once: one builds, the others wait for it.
    with FileLock(str(root / f".{TINY_MODEL_NAME}-v{_TINY_VERSION}.lock")):
        if (folder / "model_index.json").is_file():
            return folder
        with staged_folder(folder) as staging:  # appears whole or not at all
            build_tiny_pipeline().save_pretrained(staging)
    return folder


def load_tiny_pipeline(dtype: torch.dtype = torch.float32):
    """Load the tiny pipeline with `CogVideoXPipeline.from_pretrained` from its local folder.

    Example:
        ```python
        >>> from repvideo_diffusers.tiny import load_tiny_pipeline
        >>> pipe = load_tiny_pipeline()
        >>> type(pipe).__name__
        'CogVideoXPipeline'

        ```
    """
    from diffusers import CogVideoXPipeline

    folder = tiny_pipeline_path()
    try:
        return CogVideoXPipeline.from_pretrained(folder, dtype=dtype)
    except Exception as error:  # noqa: BLE001 - whatever broke, the fix is the same: rebuild the cache
        detail = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
        raise OSError(
            f"The cached tiny pipeline in {str(folder)!r} cannot be loaded ({type(error).__name__}: {detail}): the "
            f"cache is corrupt. Delete {str(folder)!r} and rerun; it is rebuilt in seconds."
        ) from error

"""Training data for ``repvideo train``: a folder of videos with captions, decoded, resized, cut and encoded.

Layout (the Hugging Face ``imagefolder`` convention): a folder with ``metadata.jsonl``, one
``{"file_name": "clip.mp4", "text": "a caption"}`` per line, paths relative to the folder; or a CSV file (or a
folder with ``metadata.csv``) with the same two columns.

Every clip is decoded with imageio-ffmpeg (`repvideo_diffusers.video.read_video`), resized so it covers the
model's resolution and centre-cropped, cut to the first ``num_frames`` frames (``1 + 4k`` for CogVideoX and Wan, ``1 + 8k`` for LTX-Video,
``1 + 6k`` for Mochi, ``1 + 4k`` for HunyuanVideo),
then encoded once: VAE latents and prompt embeddings. With a ``precompute_dir`` the encodings are written there as
safetensors (one file per clip, named by a fingerprint of the clip, caption and model) and reused on later runs.
Clips that cannot be used (unreadable, no caption, too short) are skipped with a warning and counted.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from diffusers.utils import logging

logger = logging.get_logger(__name__)

_METADATA_FILES = ("metadata.jsonl", "metadata.csv")


@dataclass
class Row:
    file_name: str
    text: str | None
    path: Path
    where: str  # "metadata.jsonl line 3", for messages


@dataclass
class FamilyData:
    """How one model family turns pixels and text into training inputs (one row of `FAMILY_DATA`)."""

    default_size: Callable  # pipe -> (height, width, num_frames)
    # (pipe, video (1, 3, F, H, W) in [-1, 1], generator) -> latents without batch dim, or a dict with "latents"
    # and whatever else the forward needs per clip (LTX-Video: the latent size its packed tokens came from)
    encode_video: Callable
    # (pipe, text, max_sequence_length) -> embeddings without batch dim, or a dict with "prompt_embeds" and
    # "prompt_attention_mask" for families whose transformer masks the padding (LTX-Video, Mochi; HunyuanVideo
    # also "pooled_prompt_embeds", CLIP's pooled output)
    encode_prompt: Callable
    max_sequence_length: Callable  # pipe -> int
    forward_kwargs: Callable  # (pipe, noisy, batch, timestep) -> transformer kwargs
    # pipe -> (temporal compression, multiple of height and width); None: the pipeline's vae_scale_factor_temporal
    # and twice its vae_scale_factor_spatial (CogVideoX, Wan)
    size_multiples: Callable | None = None


def _cogvideox_size(pipe):
    config = pipe.transformer.config
    return (config.sample_height * pipe.vae_scale_factor_spatial, config.sample_width * pipe.vae_scale_factor_spatial,
            config.sample_frames)


def _cogvideox_encode_video(pipe, video, generator):
    latents = pipe.vae.encode(video.to(pipe.vae.dtype)).latent_dist.sample(generator=generator)
    # The transformer takes (B, F, C, H, W), scaled as in the pipeline.
    return (latents * pipe.vae.config.scaling_factor).permute(0, 2, 1, 3, 4)[0]


def _cogvideox_encode_prompt(pipe, text, max_sequence_length):
    embeds, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
                                   device=torch.device("cpu"))
    return embeds[0]


def _cogvideox_forward_kwargs(pipe, noisy, batch, timestep):
    kwargs = {"hidden_states": noisy, "encoder_hidden_states": batch["prompt_embeds"], "timestep": timestep,
              "return_dict": False}
    if pipe.transformer.config.use_rotary_positional_embeddings:  # CogVideoX-5B and 1.5
        frames, height, width = noisy.shape[1], noisy.shape[3], noisy.shape[4]
        scale = pipe.vae_scale_factor_spatial
        kwargs["image_rotary_emb"] = pipe._prepare_rotary_positional_embeddings(
            height * scale, width * scale, frames, noisy.device
        )
    return kwargs


def _wan_size(pipe):
    return 480, 832, 81  # WanPipeline.__call__ defaults


def _wan_encode_video(pipe, video, generator):
    vae = pipe.vae
    latents = vae.encode(video.to(vae.dtype)).latent_dist.sample(generator=generator)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
    return ((latents - mean) / std)[0]  # the inverse of WanPipeline's decode normalisation


def _wan_encode_prompt(pipe, text, max_sequence_length):
    embeds, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=max_sequence_length,
                                   device=torch.device("cpu"))
    return embeds[0]


def _wan_forward_kwargs(pipe, noisy, batch, timestep):
    return {"hidden_states": noisy, "encoder_hidden_states": batch["prompt_embeds"], "timestep": timestep,
            "return_dict": False}


def _ltx_size(pipe):
    return 512, 704, 161  # LTXPipeline.__call__ defaults


def _ltx_encode_video(pipe, video, generator):
    vae = pipe.vae
    latents = vae.encode(video.to(vae.dtype)).latent_dist.sample(generator=generator)
    # The pipeline's own normalisation and packing, so training sees exactly what its denoising loop sees.
    latents = pipe._normalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    _, _, frames, height, width = latents.shape
    packed = pipe._pack_latents(latents, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)
    # Packing forgets the grid; the transformer's rotary positions need it back, in latent units.
    return {"latents": packed[0], "latent_size": torch.tensor([frames, height, width])}


def _masked_encode_prompt(pipe, text, max_sequence_length):
    embeds, mask, _, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False,
                                            max_sequence_length=max_sequence_length, device=torch.device("cpu"))
    return {"prompt_embeds": embeds[0], "prompt_attention_mask": mask[0]}


# LTXPipeline.__call__'s default frame_rate: the rotary temporal scale inference will use with these gates.
_LTX_FRAME_RATE = 25


def _ltx_forward_kwargs(pipe, noisy, batch, timestep):
    # One run trains at one size, so every clip of the batch has the same latent grid.
    frames, height, width = (int(v) for v in batch["latent_size"][0])
    spatial = pipe.vae_spatial_compression_ratio
    return {"hidden_states": noisy, "encoder_hidden_states": batch["prompt_embeds"], "timestep": timestep,
            "encoder_attention_mask": batch["prompt_attention_mask"], "num_frames": frames, "height": height,
            "width": width,
            "rope_interpolation_scale": (pipe.vae_temporal_compression_ratio / _LTX_FRAME_RATE, spatial, spatial),
            "return_dict": False}


def _mochi_size(pipe):
    return pipe.default_height, pipe.default_width, 19  # MochiPipeline.__call__ defaults


def _mochi_encode_video(pipe, video, generator):
    vae = pipe.vae
    latents = vae.encode(video.to(vae.dtype)).latent_dist.sample(generator=generator)
    # The inverse of MochiPipeline's decode normalisation (which falls back to the scaling factor alone).
    if getattr(vae.config, "latents_mean", None) is not None and getattr(vae.config, "latents_std", None) is not None:
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(latents)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(latents)
        return ((latents - mean) * vae.config.scaling_factor / std)[0]
    return (latents * vae.config.scaling_factor)[0]


def _mochi_forward_kwargs(pipe, noisy, batch, timestep):
    return {"hidden_states": noisy, "encoder_hidden_states": batch["prompt_embeds"], "timestep": timestep,
            "encoder_attention_mask": batch["prompt_attention_mask"], "return_dict": False}



def _hunyuan_size(pipe):
    return 720, 1280, 129  # HunyuanVideoPipeline.__call__ defaults


def _hunyuan_encode_video(pipe, video, generator):
    latents = pipe.vae.encode(video.to(pipe.vae.dtype)).latent_dist.sample(generator=generator)
    return (latents * pipe.vae.config.scaling_factor)[0]  # the inverse of the pipeline's `/ scaling_factor`


def _hunyuan_encode_prompt(pipe, text, max_sequence_length):
    # The pipeline's default prompt template and crop_start: inference (and validation) encode the same way.
    embeds, pooled, mask = pipe.encode_prompt(text, device=torch.device("cpu"), max_sequence_length=max_sequence_length)
    if not mask.any():
        # An all-padding mask leaves the attention nothing to attend to: NaN losses from the first step.
        raise ValueError(
            f"The Llama tokenizer left nothing of the caption {text!r} after the prompt template's first "
            f"crop_start tokens (the pipeline crops them): expected at least one caption token, found an all-padding "
            f"mask of {mask.shape[-1]}. Use the tokenizer the pipeline was released with (its template prefix is "
            f"exactly crop_start tokens long)."
        )
    return {"prompt_embeds": embeds[0], "pooled_prompt_embeds": pooled[0], "prompt_attention_mask": mask[0]}


# HunyuanVideo is guidance-distilled: the guidance scale is an input of the transformer, not classifier-free
# guidance. Training uses HunyuanVideoPipeline.__call__'s default (6.0), which inference then uses by default too.
_HUNYUAN_GUIDANCE_SCALE = 6.0


def _hunyuan_forward_kwargs(pipe, noisy, batch, timestep):
    # The pipeline passes guidance_scale * 1000, as the guidance embedding was trained.
    guidance = torch.full((noisy.shape[0],), _HUNYUAN_GUIDANCE_SCALE * 1000.0, device=noisy.device, dtype=noisy.dtype)
    return {"hidden_states": noisy, "timestep": timestep, "encoder_hidden_states": batch["prompt_embeds"],
            "encoder_attention_mask": batch["prompt_attention_mask"],
            "pooled_projections": batch["pooled_prompt_embeds"], "guidance": guidance, "return_dict": False}

# Per-family facts of the data path. Adding a family is one row here (the objective comes from its scheduler).
FAMILY_DATA: dict[str, FamilyData] = {
    "CogVideoX": FamilyData(_cogvideox_size, _cogvideox_encode_video, _cogvideox_encode_prompt,
                            lambda pipe: pipe.transformer.config.max_text_seq_length, _cogvideox_forward_kwargs),
    "Wan": FamilyData(_wan_size, _wan_encode_video, _wan_encode_prompt, lambda pipe: 512, _wan_forward_kwargs),
    # max_sequence_length: each pipeline's __call__ default.
    "LTX-Video": FamilyData(
        _ltx_size, _ltx_encode_video, _masked_encode_prompt, lambda pipe: 128, _ltx_forward_kwargs,
        lambda pipe: (pipe.vae_temporal_compression_ratio * pipe.transformer_temporal_patch_size,
                      pipe.vae_spatial_compression_ratio * pipe.transformer_spatial_patch_size),
    ),
    "Mochi": FamilyData(
        _mochi_size, _mochi_encode_video, _masked_encode_prompt, lambda pipe: 256, _mochi_forward_kwargs,
        lambda pipe: (pipe.vae_temporal_scale_factor,
                      pipe.vae_spatial_scale_factor * pipe.transformer.config.patch_size),
    ),
    # Frames 1 + 4k (released patch_size_t is 1); height and width: VAE x patch, which is the pipeline's 16.
    "HunyuanVideo": FamilyData(
        _hunyuan_size, _hunyuan_encode_video, _hunyuan_encode_prompt, lambda pipe: 256, _hunyuan_forward_kwargs,
        lambda pipe: (pipe.vae_scale_factor_temporal,
                      pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size),
    ),
}


def family_data(family: str) -> FamilyData:
    if family not in FAMILY_DATA:
        raise ValueError(
            f"`repvideo train` reads videos for {', '.join(FAMILY_DATA)} pipelines; this pipeline's transformer is "
            f"{family}. Train it from your own latents with `repvideo_diffusers.training.training_loss`, or use a "
            f"{' / '.join(FAMILY_DATA)} pipeline."
        )
    return FAMILY_DATA[family]


def read_rows(data: str | os.PathLike) -> list[Row]:
    """The (file, caption) rows of a dataset folder (``metadata.jsonl`` / ``metadata.csv``) or CSV file."""
    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(
            f"--data {str(data)!r} does not exist. Pass a folder of videos with metadata.jsonl "
            '({"file_name": ..., "text": ...} per line) or a CSV file with file_name,text columns.'
        )
    if data.is_dir():
        found = [data / name for name in _METADATA_FILES if (data / name).is_file()]
        if not found:
            raise ValueError(
                f"--data {str(data)!r} is a folder without metadata.jsonl or metadata.csv, found "
                f"{sorted(p.name for p in data.iterdir())[:10]}. Add metadata.jsonl with one "
                '{"file_name": "clip.mp4", "text": "caption"} per line.'
            )
        metadata, root = found[0], data
    else:
        metadata, root = data, data.parent
    rows = []
    if metadata.suffix == ".jsonl":
        for number, line in enumerate(metadata.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{metadata} line {number} is not valid JSON ({error}). Fix or remove that line.")
            rows.append(_row(record, root, f"{metadata.name} line {number}", metadata))
    elif metadata.suffix == ".csv":
        with open(metadata, newline="") as handle:
            reader = csv.DictReader(handle)
            if "file_name" not in (reader.fieldnames or []):
                raise ValueError(f"{metadata} needs a header with file_name,text columns, found {reader.fieldnames}.")
            for number, record in enumerate(reader, 2):
                rows.append(_row(record, root, f"{metadata.name} line {number}", metadata))
    else:
        raise ValueError(f"--data {str(data)!r}: expected a folder, a .jsonl or a .csv file, found {metadata.suffix!r}.")
    return rows


def _row(record, root, where, metadata) -> Row:
    if not isinstance(record, dict) or not record.get("file_name"):
        raise ValueError(f"{where} of {metadata} has no file_name: every row needs file_name and text.")
    text = record.get("text")
    text = text.strip() if isinstance(text, str) else None
    return Row(str(record["file_name"]), text or None, root / str(record["file_name"]), where)


def preprocess_video(frames, height: int, width: int, num_frames: int) -> torch.Tensor:
    """uint8 ``(F, H, W, 3)`` -> float ``(1, 3, num_frames, height, width)`` in [-1, 1]: first frames, resized
    to cover the target (aspect kept, antialiased) and centre-cropped."""
    video = torch.from_numpy(frames[:num_frames]).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    scale = max(height / video.shape[2], width / video.shape[3])
    size = (max(height, round(video.shape[2] * scale)), max(width, round(video.shape[3] * scale)))
    if size != tuple(video.shape[2:]):
        video = torch.nn.functional.interpolate(video, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - height) // 2, (size[1] - width) // 2
    video = video[:, :, top : top + height, left : left + width].clamp(-1, 1)
    return video.permute(1, 0, 2, 3).unsqueeze(0)


def _tensors(encoded, key: str) -> dict:
    """An encoder's output as sample entries: floats in float32 (the batch is cast by autocast), masks and sizes as
    they are."""
    encoded = encoded if isinstance(encoded, dict) else {key: encoded}
    return {name: (value.float() if value.is_floating_point() else value).contiguous() for name, value in encoded.items()}


def _fingerprint(row: Row, model_id: str, size: tuple, seed: int, max_sequence_length: int) -> str:
    stat = row.path.stat()
    key = json.dumps([str(row.path.resolve()), stat.st_size, stat.st_mtime_ns, row.text, model_id, list(size), seed,
                      max_sequence_length])
    return hashlib.sha1(key.encode()).hexdigest()


def load_dataset(pipe, family: str, data, *, height: int, width: int, num_frames: int, max_sequence_length: int,
                 seed: int = 0, precompute_dir: str | os.PathLike | None = None, model_id: str = "") -> list[dict]:
    """Decode, check and encode every usable clip; returns one dict of tensors per clip.

    Unusable clips are skipped with a warning each and counted in one summary line; if none is left a
    `ValueError` lists why.
    """
    from safetensors.torch import load_file, save_file

    from ..video import read_video

    facts = family_data(family)
    rows = read_rows(data)
    if precompute_dir is not None:
        Path(precompute_dir).mkdir(parents=True, exist_ok=True)
    samples, skipped, reused = [], Counter(), 0
    for index, row in enumerate(rows):
        if row.text is None:
            logger.warning(f"Skipping {row.file_name} ({row.where}): missing caption (no 'text').")
            skipped["missing caption"] += 1
            continue
        cached = None
        if precompute_dir is not None and row.path.is_file():
            cached = Path(precompute_dir) / f"{_fingerprint(row, model_id, (height, width, num_frames), seed, max_sequence_length)}.safetensors"
            if cached.is_file():
                samples.append(load_file(cached))
                reused += 1
                continue
        try:
            frames, _ = read_video(row.path)
        except (ValueError, FileNotFoundError) as error:
            logger.warning(f"Skipping {row.file_name} ({row.where}): unreadable video ({str(error).splitlines()[0]}).")
            skipped["unreadable"] += 1
            continue
        if len(frames) < num_frames:
            logger.warning(
                f"Skipping {row.file_name} ({row.where}): too short ({len(frames)} frames, the model takes {num_frames})."
            )
            skipped["too short"] += 1
            continue
        video = preprocess_video(frames, height, width, num_frames)
        # One generator per clip: the VAE's latent sample does not depend on which other clips are usable.
        generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
        with torch.no_grad():
            sample = {**_tensors(facts.encode_video(pipe, video, generator), "latents"),
                      **_tensors(facts.encode_prompt(pipe, row.text, max_sequence_length), "prompt_embeds")}
        if cached is not None:
            partial = cached.with_suffix(".partial")
            save_file(sample, partial)
            os.replace(partial, cached)
        samples.append(sample)
    summary = f"using {len(samples)} of {len(rows)} clips"
    if reused:
        summary += f" ({reused} encodings reused from {precompute_dir})"
    if skipped:
        summary += f"; skipped {sum(skipped.values())}: " + ", ".join(f"{n} {why}" for why, n in sorted(skipped.items()))
    if not samples:
        raise ValueError(
            f"No usable training clips in {str(data)!r}: {summary}. Each clip needs a caption, must decode with "
            f"ffmpeg and have at least {num_frames} frames (or pass a smaller --num-frames)."
        )
    logger.warning(f"Training data: {summary}.") if skipped else logger.info(f"Training data: {summary}.")
    return samples

"""Training data for ``repvideo train``: a folder of videos with captions, decoded, resized, cut and encoded.

Layout (the Hugging Face ``imagefolder`` convention): a folder with ``metadata.jsonl``, one
``{"file_name": "clip.mp4", "text": "a caption"}`` per line, paths relative to the folder; or a CSV file (or a
folder with ``metadata.csv``) with the same two columns.

Every clip is decoded with imageio-ffmpeg (`repvideo_diffusers.utils.video.read_video`), resized so it covers the
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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.utils import logging

from ..families import TrainingFacts, registered_families

logger = logging.get_logger(__name__)

_METADATA_FILES = ("metadata.jsonl", "metadata.csv")


@dataclass
class Row:
    file_name: str
    text: str | None
    path: Path
    where: str  # "metadata.jsonl line 3", for messages


class _FamilyData(Mapping):
    """``{family name: TrainingFacts}`` of every registered family that declares training facts (read live)."""

    def _table(self) -> dict[str, TrainingFacts]:
        return {name: family.training for name, family in registered_families().items() if family.training}

    def __getitem__(self, name):
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self):
        return len(self._table())


# How each family turns pixels and text into training inputs: `Family.training` in `repvideo_diffusers.families`.
FAMILY_DATA: Mapping[str, TrainingFacts] = _FamilyData()
FamilyData = TrainingFacts  # the former name


def family_data(family: str) -> TrainingFacts:
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
    from ..utils.video import resize_and_center_crop

    video = torch.from_numpy(frames[:num_frames]).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (F, 3, H, W)
    return resize_and_center_crop(video, height, width).permute(1, 0, 2, 3).unsqueeze(0)


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

    from ..utils.io import staged_file
    from ..utils.video import read_video

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
                try:
                    samples.append(load_file(cached))
                except Exception as error:  # noqa: BLE001 - safetensors raises its own SafetensorError
                    from .workspace import corrupt_precompute_entry

                    raise corrupt_precompute_entry(cached, precompute_dir, error) from None
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
            with staged_file(cached) as staging:  # never a half-written encoding under the name that is reused
                save_file(sample, staging)
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

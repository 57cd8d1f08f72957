"""Reconstruct a video with a CV-VAE and measure how close it stays: the library behind ``repvideo vae reconstruct``.

The VAE maps ``1 + 4k`` frames of a multiple-of-8 size, so the clip is trimmed to that rather than padded with
invented pixels; PSNR and SSIM compare the 8-bit frames that were written with the trimmed input, on a [0, 1]
scale.

Example:
    ```python
    >>> import os, tempfile
    >>> import numpy as np
    >>> from repvideo_diffusers.cvvae import CVVAEModel
    >>> from repvideo_diffusers.cvvae.reconstruct import reconstruct_video
    >>> from repvideo_diffusers.utils.video import write_video
    >>> folder = tempfile.mkdtemp()
    >>> clip = np.random.default_rng(0).integers(0, 255, (7, 36, 40, 3), dtype=np.uint8)
    >>> _ = write_video(clip, os.path.join(folder, "in.mp4"), fps=8)
    >>> vae = CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None)
    >>> result = reconstruct_video(vae, os.path.join(folder, "in.mp4"), os.path.join(folder, "out.mp4"),
    ...                            progress=False, note=print)
    Using 5 of 7 frames at 32x40 (1 + 4k frames, multiples of 8).
    >>> result.num_frames, result.height, result.width, -1 <= result.ssim <= 1
    (5, 32, 40, True)

    ```
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

logger = logging.getLogger(__name__)


@dataclass
class Reconstruction:
    """What `reconstruct_video` did: the frames it used, how long encode + decode took, and the scores."""

    out: str
    num_frames: int
    height: int
    width: int
    seconds: float
    psnr: float  # dB
    ssim: Optional[float]  # None when skipped (``ssim=False``)


def configure_vae(vae, *, tile_size: Optional[int] = None, tile_overlap: Optional[float] = None, tiling: bool = True,
                  chunk_frames: Optional[int] = None, chunking: bool = True) -> None:
    """Spatial tiling and temporal chunking of ``vae`` for one run; ``None`` keeps what its config says."""
    if not tiling:
        vae.disable_tiling()
    elif tile_size is not None:
        vae.enable_tiling(tile_size, tile_overlap)
    elif tile_overlap is not None and vae.use_tiling:
        vae.enable_tiling(vae.tile_sample_size, tile_overlap)
    if not chunking:
        vae.disable_chunking()
    elif chunk_frames is not None:
        vae.enable_chunking(chunk_frames)


def trim_for_vae(frames: np.ndarray, vae) -> np.ndarray:
    """The first ``1 + 4k`` frames of ``frames`` (``(t, h, w, 3)``), cropped to multiples of the VAE's compression.

    Example:
        ```python
        >>> import numpy as np
        >>> from repvideo_diffusers.cvvae import CVVAEModel
        >>> vae = CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None)
        >>> trim_for_vae(np.zeros((11, 36, 40, 3), dtype=np.uint8), vae).shape
        (9, 32, 40, 3)

        ```
    """
    n, s = vae.time_n_compress, vae.spatial_n_compress
    usable = 1 + (len(frames) - 1) // n * n
    height, width = frames.shape[1] // s * s, frames.shape[2] // s * s
    if height == 0 or width == 0:
        raise ValueError(f"Frames of {frames.shape[1]}x{frames.shape[2]} are smaller than {s}x{s} pixels.")
    return frames[:usable, :height, :width]


def reconstruct_frames(vae, frames: np.ndarray, *, device="cpu", dtype: torch.dtype = torch.float32,
                       sample: bool = False, seed: int = 0, progress: bool = True) -> tuple[np.ndarray, float]:
    """Encode and decode ``frames`` (already trimmed); returns the 8-bit frames and the seconds it took.

    ``sample`` decodes a posterior sample (seeded) instead of its mode; ``progress`` shows a bar over the chunks.
    """
    from tqdm.auto import tqdm

    from ..utils.video import frames_to_tensor, tensor_to_frames

    device = torch.device(device)
    vae = vae.to(device).eval()
    video = frames_to_tensor(frames).to(device, dtype)
    encode_chunks, decode_chunks = vae.num_chunks(len(frames))
    start = time.perf_counter()
    with torch.no_grad(), tqdm(total=encode_chunks + decode_chunks, desc="CV-VAE chunks", unit="chunk",
                               disable=not progress) as bar:
        posterior = vae.encode(video, on_chunk=bar.update).latent_dist
        generator = torch.Generator(device=device).manual_seed(seed)
        z = posterior.sample(generator=generator) if sample else posterior.mode()
        reconstruction = vae.decode(z, on_chunk=bar.update).sample
    return tensor_to_frames(reconstruction), time.perf_counter() - start


def score_frames(output: np.ndarray, reference: np.ndarray, ssim: bool = True) -> tuple[float, Optional[float]]:
    """PSNR (dB) and SSIM (``None`` if not ``ssim``) of two uint8 clips ``(t, h, w, 3)``, on a [0, 1] scale."""
    from .metrics import psnr
    from .metrics import ssim as ssim_of

    def scaled(frames):
        return torch.from_numpy(frames).permute(3, 0, 1, 2)[None].double() / 255.0

    a, b = scaled(output), scaled(reference)
    return float(psnr(a, b)), (float(ssim_of(a, b)) if ssim else None)


def reconstruct_video(vae, video: str | os.PathLike, out: str | os.PathLike, *, subfolder: Optional[str] = None,
                      device="cpu", dtype: torch.dtype = torch.float32, max_frames: Optional[int] = None,
                      tile_size: Optional[int] = None, tile_overlap: Optional[float] = None, tiling: bool = True,
                      chunk_frames: Optional[int] = None, chunking: bool = True, sample: bool = False, seed: int = 0,
                      progress: bool = True, note: Optional[Callable[[str], None]] = None,
                      ssim: bool = True) -> Reconstruction:
    """Reconstruct the video file ``video`` with ``vae`` (a CV-VAE folder, or a loaded model), write ``out``.

    The video is read before the VAE is loaded, so a wrong video path fails without loading any weights; the folder
    of ``out`` is made before the work, and ``out`` itself is written beside its place and moved in when complete.
    When the clip has to be trimmed, ``note`` (default: the log) receives one line saying how. ``ssim=False``
    skips SSIM (``Reconstruction.ssim`` is then ``None``).
    """
    from ..utils.io import staged_file
    from ..utils.video import read_video, write_video
    from .loading import load_cvvae

    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"--max-frames must be a positive integer (1 + 4k frames are used), got {max_frames!r}.")
    try:
        frames, fps = read_video(video)
    except ValueError as error:
        raise ValueError(f"--video {os.fspath(video)!r} could not be read as a video ({error}). Pass an mp4 (or "
                         "another format ffmpeg decodes).") from None
    if max_frames is not None:
        frames = frames[:max_frames]
    if isinstance(vae, (str, os.PathLike)):
        vae = load_cvvae(os.fspath(vae), subfolder, torch_dtype=dtype)
    configure_vae(vae, tile_size=tile_size, tile_overlap=tile_overlap, tiling=tiling, chunk_frames=chunk_frames,
                  chunking=chunking)
    used = trim_for_vae(frames, vae)
    if used.shape != frames.shape:
        (note or logger.info)(
            f"Using {len(used)} of {len(frames)} frames at {used.shape[1]}x{used.shape[2]} "
            f"(1 + {vae.time_n_compress}k frames, multiples of {vae.spatial_n_compress})."
        )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)  # before the work, not after it
    output, seconds = reconstruct_frames(vae, used, device=device, dtype=dtype, sample=sample, seed=seed,
                                         progress=progress)
    with staged_file(out) as staging:
        write_video(output, staging, fps=fps)
    psnr, ssim_value = score_frames(output, used, ssim=ssim)
    return Reconstruction(out=os.fspath(out), num_frames=len(used), height=used.shape[1], width=used.shape[2],
                          seconds=seconds, psnr=psnr, ssim=ssim_value)

"""Training a CV-VAE with the paper's objective (reconstruction + KL + latent regularisation), on accelerate.

The video VAE starts from an image VAE (``inflate_image_vae``: 2D weights inflated to 3D), and the frozen
image VAE's decoder supplies the latent regularisation that keeps the latent space compatible. The paper's
LPIPS and GAN terms are not included (they need extra pretrained networks); ``compute_losses`` is the place
to add them.
"""

import glob
import json
import logging
import math
import os
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset

from .regularization import latent_regularization_loss

logger = logging.getLogger(__name__)


@dataclass
class CVVAETrainingConfig:
    """Hyper-parameters of ``train_cvvae`` (defaults follow the official SD3 training config where it has one).

    ``checkpoint_every``: save a checkpoint (``<output_dir>/checkpoints/checkpoint-<step>``: weights, optimizer, RNG
    states) every N steps, so that ``resume="latest"`` continues an interrupted run; ``None``: no checkpoints.

    Example:
        >>> CVVAETrainingConfig(steps=10).frame_choice
        'slice'
        >>> CVVAETrainingConfig(steps=-1).check()
        Traceback (most recent call last):
        ...
        ValueError: --max-steps must be a positive integer, got -1.
    """

    steps: int = 1000
    learning_rate: float = 2e-5
    batch_size: int = 1
    kl_weight: float = 1e-6
    regularization_weight: float = 1.0
    frame_choice: str = "slice"
    regularization_loss: str = "l1"
    sample_posterior: bool = True
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: Optional[int] = None
    checkpoints_total_limit: Optional[int] = None

    def check(self) -> None:
        """Refuse values no run accepts (named by their ``repvideo vae train`` flags), before any work."""
        for flag, value, optional in (("--max-steps", self.steps, False), ("--batch-size", self.batch_size, False),
                                      ("--checkpoint-every", self.checkpoint_every, True),
                                      ("--checkpoints-total-limit", self.checkpoints_total_limit, True)):
            if optional and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{flag} must be a positive integer, got {value!r}.")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"--learning-rate must be a positive number, got {self.learning_rate!r}.")
        for flag, value in (("--kl-weight", self.kl_weight), ("--reg-weight", self.regularization_weight)):
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{flag} must be a non-negative number, got {value!r}.")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"--mixed-precision must be no, fp16 or bf16, got {self.mixed_precision!r}.")


def kl_divergence(posterior) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) averaged over latent elements (so its weight does not depend on the clip size)."""
    return 0.5 * torch.mean(posterior.mean**2 + posterior.var - 1.0 - posterior.logvar)


def compute_losses(
    vae, image_vae, video: torch.Tensor, config: CVVAETrainingConfig, generator: Optional[torch.Generator] = None
) -> Dict[str, torch.Tensor]:
    """One forward pass of the objective: ``{"loss", "reconstruction", "kl", "regularization"}``.

    Example:
        >>> import torch
        >>> from diffusers import AutoencoderKL
        >>> from repvideo_diffusers.cvvae.inflation import inflate_image_vae
        >>> image_vae = AutoencoderKL(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
        ...                           up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
        >>> vae = inflate_image_vae(image_vae, tile_spatial_size=None, en_de_n_frames_a_time=None)
        >>> losses = compute_losses(vae, image_vae, torch.rand(1, 3, 5, 32, 32) * 2 - 1, CVVAETrainingConfig())
        >>> sorted(losses)
        ['kl', 'loss', 'reconstruction', 'regularization']
    """
    posterior = vae.encode(video).latent_dist
    z = posterior.sample(generator=generator) if config.sample_posterior else posterior.mode()
    reconstruction = vae.decode(z).sample
    rec = F.l1_loss(reconstruction.float(), video.float())
    kl = kl_divergence(posterior)
    reg = latent_regularization_loss(
        z,
        video,
        image_vae,
        frame_choice=config.frame_choice,
        loss=config.regularization_loss,
        time_compress=vae.time_n_compress,
        generator=generator,
    )
    total = rec + config.kl_weight * kl + config.regularization_weight * reg
    return {"loss": total, "reconstruction": rec, "kl": kl, "regularization": reg}


class VideoClipDataset(Dataset):
    """``1 + 4k``-frame clips from mp4 files, resized (shorter side) and centre-cropped to ``size``, in ``[-1, 1]``.

    Example::

        dataset = VideoClipDataset(["a.mp4", "b.mp4"], num_frames=17, size=256)
    """

    def __init__(self, paths: Sequence[str], num_frames: int = 17, size: int = 256):
        if (num_frames - 1) % 4 != 0:
            raise ValueError(f"num_frames must be 1 + 4k; found {num_frames}.")
        if not paths:
            raise ValueError("No training videos given.")
        self.paths, self.num_frames, self.size = list(paths), num_frames, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from ..utils.video import frames_to_tensor, read_video, resize_and_center_crop

        frames, _ = read_video(self.paths[index])
        if len(frames) < self.num_frames:
            raise ValueError(f"{self.paths[index]} has {len(frames)} frames; the clips need {self.num_frames}.")
        video = frames_to_tensor(frames[: self.num_frames])[0]  # c t h w: frames as channels, resized alike
        return resize_and_center_crop(video, self.size, self.size)


def _clip_indices(position: int, count: int, num_clips: int, seed: int) -> List[int]:
    """Clips ``position .. position + count`` of an endless stream shuffled per epoch by ``(seed, epoch)``: the
    order depends only on the position, so a resumed run draws what the uninterrupted run drew."""
    out = []
    for p in range(position, position + count):
        epoch, k = divmod(p, num_clips)
        order = torch.randperm(num_clips, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(int(order[k]))
    return out


def _clip(item) -> torch.Tensor:
    return item[0] if isinstance(item, (list, tuple)) else item


def train_cvvae(
    vae,
    image_vae,
    dataset,
    config: CVVAETrainingConfig,
    output_dir: Optional[str] = None,
    on_step: Optional[Callable[[int, Dict[str, float]], None]] = None,
    resume: Optional[str] = None,
    overwrite: bool = False,
) -> List[Dict[str, float]]:
    """Train ``vae`` against the frozen ``image_vae`` with accelerate; returns the per-step loss history.

    ``dataset`` yields videos ``(3, 1 + 4k, H, W)`` in ``[-1, 1]`` (a ``Dataset`` or a 5D tensor of clips).
    With ``output_dir`` the trained model is saved there with ``save_pretrained`` (loadable by
    ``CVVAEModel.from_pretrained``), checkpoints every ``config.checkpoint_every`` steps go to its
    ``checkpoints/``, and ``resume`` (``"latest"`` or a checkpoint folder) continues an interrupted run exactly: the
    clips and the noise of every step depend only on ``(seed, step)``. An ``output_dir`` holding a run is refused
    unless ``resume`` or ``overwrite`` (see `repvideo_diffusers.training.workspace`).

    Example:
        >>> import torch
        >>> from diffusers import AutoencoderKL
        >>> from repvideo_diffusers.cvvae.inflation import inflate_image_vae
        >>> image_vae = AutoencoderKL(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
        ...                           up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
        >>> vae = inflate_image_vae(image_vae, tile_spatial_size=None, en_de_n_frames_a_time=None)
        >>> clips = torch.rand(2, 3, 5, 32, 32) * 2 - 1
        >>> history = train_cvvae(vae, image_vae, clips, CVVAETrainingConfig(steps=2, learning_rate=1e-3))
        >>> len(history)
        2
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from .._compat import reset_accelerator_state_if_single_process
    from ..training.checkpoints import Progress, resolve_resume, save_checkpoint
    from ..training.checkpoints import resume as load_checkpoint
    from ..training.workspace import OutputFolder, check_output_dir
    from ..utils.io import staged_folder

    config.check()
    if output_dir is None and (resume or config.checkpoint_every):
        raise ValueError("Checkpoints and resume need an output_dir (--out) to live in.")
    if output_dir is not None:
        check_output_dir(output_dir, resume=resume, overwrite=overwrite)
    resume_from = resolve_resume(resume, Path(output_dir)) if resume else None
    set_seed(config.seed)
    reset_accelerator_state_if_single_process()  # a second run in this process may use another mixed precision
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    if isinstance(dataset, torch.Tensor):
        dataset = TensorDataset(dataset)

    image_vae.requires_grad_(False).eval()
    image_vae.to(accelerator.device)
    vae.train()
    if config.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    vae, optimizer = accelerator.prepare(vae, optimizer)
    world, rank = accelerator.num_processes, accelerator.process_index
    fingerprint = {"num_samples": len(dataset), "global_batch": config.batch_size * world, "seed": config.seed,
                   "frame_choice": config.frame_choice, "sample_posterior": config.sample_posterior}

    folder = OutputFolder(output_dir, replace=overwrite) if output_dir is not None else nullcontext()
    with folder:
        progress = load_checkpoint(accelerator, resume_from, fingerprint) if resume_from else Progress()
        if output_dir is not None:
            folder.begin()
        while progress.step < config.steps:
            step, global_batch = progress.step, config.batch_size * world
            indices = _clip_indices(step * global_batch, global_batch, len(dataset), config.seed)
            mine = indices[rank * config.batch_size:(rank + 1) * config.batch_size]
            video = torch.stack([_clip(dataset[i]) for i in mine]).to(accelerator.device)
            generator = torch.Generator(device=accelerator.device).manual_seed(config.seed * 1_000_003 + step)
            with accelerator.autocast():
                losses = compute_losses(accelerator.unwrap_model(vae), image_vae, video, config, generator)
            accelerator.backward(losses["loss"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            record = {name: value.detach().item() for name, value in losses.items()}
            progress.losses.append(record)
            progress.step += 1
            if on_step is not None:
                on_step(step, record)
            if step % config.log_every == 0:
                logger.info("step %d: %s", step, record)
            if output_dir is not None and config.checkpoint_every and progress.step % config.checkpoint_every == 0:
                save_checkpoint(accelerator, Path(output_dir), progress, fingerprint,
                                samples_seen=progress.step * global_batch, total_limit=config.checkpoints_total_limit)
                folder.landed()

        if output_dir is not None and accelerator.is_main_process:
            model = accelerator.unwrap_model(vae)
            model.eval()
            with staged_folder(output_dir, merge=True) as staging:  # beside checkpoints/, never half-written
                model.save_pretrained(staging)
                (staging / "training_config.json").write_text(json.dumps(asdict(config), indent=2))
            folder.landed()
    return list(progress.losses)


def find_videos(directory: str) -> List[str]:
    """All ``.mp4`` files under ``directory`` (sorted)."""
    if not os.path.isdir(directory):
        what = "is a file" if os.path.exists(directory) else "does not exist"
        raise FileNotFoundError(f"--data {directory!r} {what}; a folder of .mp4 clips is expected. Check the path.")
    paths = sorted(glob.glob(os.path.join(directory, "**", "*.mp4"), recursive=True))
    if not paths:
        raise ValueError(f"--data {directory!r} holds no .mp4 files (searched its subfolders too). Put the training "
                         "clips there as mp4.")
    return paths


def _check_vae_folder(path: str, subfolder: Optional[str], option: str, what: str) -> None:
    from ..training.workspace import check_weights

    folder = os.path.join(path, subfolder) if subfolder else path
    if not os.path.isfile(os.path.join(folder, "config.json")):
        found = "does not exist" if not os.path.exists(folder) else "has no config.json"
        raise FileNotFoundError(f"{option} {folder!r} {found}; {what} (config.json + safetensors) is expected. "
                                "Check the path" + (" and the subfolder." if subfolder else
                                                    " (or pass its subfolder, e.g. --image-vae-subfolder vae)."))
    check_weights(folder, option)


def check_training_inputs(image_vae: str, videos: str, output_dir: str, config: CVVAETrainingConfig, *,
                          image_vae_subfolder: Optional[str] = None, init: Optional[str] = None,
                          num_frames: int = 17, resolution: int = 256, resume: Optional[str] = None,
                          overwrite: bool = False) -> List[str]:
    """Check everything `train_cvvae_on_videos` takes before any model is loaded; returns the clip paths."""
    from ..training.checkpoints import resolve_resume
    from ..training.workspace import check_mixed_precision, check_output_dir

    config.check()
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % 4:
        lower = max(1, (num_frames - 1) // 4 * 4 + 1) if isinstance(num_frames, int) else 17
        raise ValueError(f"--num-frames must be 1 + 4k (1, 5, 9, ...: the VAE compresses time by 4), got "
                         f"{num_frames!r}. Use {lower}.")
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8 or resolution % 8:
        raise ValueError(f"--resolution must be a positive multiple of 8 (the VAE compresses space by 8), got "
                         f"{resolution!r}. Use e.g. 256.")
    check_output_dir(output_dir, resume=resume, overwrite=overwrite)
    check_mixed_precision(config.mixed_precision)
    _check_vae_folder(image_vae, image_vae_subfolder, "--image-vae", "a diffusers AutoencoderKL folder")
    if init:
        _check_vae_folder(init, None, "--init", "a CV-VAE folder")
    paths = find_videos(videos)
    if resume:
        resolve_resume(resume, Path(output_dir))
    return paths


def train_cvvae_on_videos(
    image_vae: str,
    videos: str,
    output_dir: str,
    config: CVVAETrainingConfig,
    *,
    image_vae_subfolder: Optional[str] = None,
    variant: str = "v1",
    init: Optional[str] = None,
    num_frames: int = 17,
    resolution: int = 256,
    on_step: Optional[Callable[[int, Dict[str, float]], None]] = None,
    resume: Optional[str] = None,
    overwrite: bool = False,
) -> List[Dict[str, float]]:
    """Train a CV-VAE on the mp4 clips under ``videos`` and save it to ``output_dir``: ``repvideo vae train``.

    The video VAE is inflated from the diffusers ``AutoencoderKL`` folder ``image_vae`` (``variant`` ``"v1"``: 4
    latent channels, ``"sd3"``: 16), or continues the CV-VAE folder ``init``; the image VAE stays frozen and keeps
    the latent space. Every argument, path and the clip folder are checked before any model is loaded
    (`check_training_inputs`); ``resume`` / ``overwrite`` as in `train_cvvae`. Returns the per-step loss history.

    Example:
        >>> import os, tempfile
        >>> import numpy as np
        >>> from diffusers import AutoencoderKL
        >>> from repvideo_diffusers.utils.video import write_video
        >>> folder = tempfile.mkdtemp()
        >>> AutoencoderKL(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
        ...               up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
        ...               ).save_pretrained(os.path.join(folder, "image_vae"))
        >>> os.makedirs(os.path.join(folder, "clips"))
        >>> clip = np.random.default_rng(0).integers(0, 255, (5, 32, 32, 3), dtype=np.uint8)
        >>> _ = write_video(clip, os.path.join(folder, "clips", "a.mp4"))
        >>> history = train_cvvae_on_videos(os.path.join(folder, "image_vae"), os.path.join(folder, "clips"),
        ...                                 os.path.join(folder, "out"), CVVAETrainingConfig(steps=1),
        ...                                 num_frames=5, resolution=32)
        >>> len(history), sorted(os.listdir(os.path.join(folder, "out")))
        (1, ['config.json', 'diffusion_pytorch_model.safetensors', 'training_config.json'])
    """
    from diffusers import AutoencoderKL

    from .inflation import inflate_image_vae
    from .loading import load_cvvae

    paths = check_training_inputs(image_vae, videos, output_dir, config, image_vae_subfolder=image_vae_subfolder,
                                  init=init, num_frames=num_frames, resolution=resolution, resume=resume,
                                  overwrite=overwrite)
    dataset = VideoClipDataset(paths, num_frames=num_frames, size=resolution)
    frozen = AutoencoderKL.from_pretrained(image_vae, subfolder=image_vae_subfolder)
    vae = load_cvvae(init) if init else inflate_image_vae(frozen, variant)
    return train_cvvae(vae, frozen, dataset, config, output_dir=output_dir, on_step=on_step, resume=resume,
                       overwrite=overwrite)

"""Training a CV-VAE with the paper's objective (reconstruction + KL + latent regularisation), on accelerate.

The video VAE starts from an image VAE (``inflate_image_vae``: 2D weights inflated to 3D), and the frozen
image VAE's decoder supplies the latent regularisation that keeps the latent space compatible. The paper's
LPIPS and GAN terms are not included (they need extra pretrained networks); ``compute_losses`` is the place
to add them.
"""

import glob
import logging
import os
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from .regularization import latent_regularization_loss

logger = logging.getLogger(__name__)


@dataclass
class CVVAETrainingConfig:
    """Hyper-parameters of ``train_cvvae`` (defaults follow the official SD3 training config where it has one).

    Example:
        >>> CVVAETrainingConfig(steps=10).frame_choice
        'slice'
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


def train_cvvae(
    vae,
    image_vae,
    dataset,
    config: CVVAETrainingConfig,
    output_dir: Optional[str] = None,
    on_step: Optional[Callable[[int, Dict[str, float]], None]] = None,
) -> List[Dict[str, float]]:
    """Train ``vae`` against the frozen ``image_vae`` with accelerate; returns the per-step loss history.

    ``dataset`` yields videos ``(3, 1 + 4k, H, W)`` in ``[-1, 1]`` (a ``Dataset`` or a 5D tensor of clips).
    With ``output_dir`` the trained model is saved there with ``save_pretrained`` (loadable by
    ``CVVAEModel.from_pretrained``).

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

    set_seed(config.seed)
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    if isinstance(dataset, torch.Tensor):
        dataset = TensorDataset(dataset)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=False)

    image_vae.requires_grad_(False).eval()
    image_vae.to(accelerator.device)
    vae.train()
    if config.gradient_checkpointing:
        vae.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    vae, optimizer, loader = accelerator.prepare(vae, optimizer, loader)
    generator = torch.Generator(device=accelerator.device).manual_seed(config.seed)

    history: List[Dict[str, float]] = []
    step = 0
    while step < config.steps:
        for batch in loader:
            video = batch[0] if isinstance(batch, (list, tuple)) else batch
            with accelerator.autocast():
                losses = compute_losses(accelerator.unwrap_model(vae), image_vae, video, config, generator)
            accelerator.backward(losses["loss"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            record = {name: value.detach().item() for name, value in losses.items()}
            history.append(record)
            if on_step is not None:
                on_step(step, record)
            if step % config.log_every == 0:
                logger.info("step %d: %s", step, record)
            step += 1
            if step >= config.steps:
                break

    if output_dir is not None and accelerator.is_main_process:
        model = accelerator.unwrap_model(vae)
        model.eval()
        model.save_pretrained(output_dir)
        with open(os.path.join(output_dir, "training_config.json"), "w") as handle:
            import json

            json.dump(asdict(config), handle, indent=2)
    return history


def find_videos(directory: str) -> List[str]:
    """All ``.mp4`` files under ``directory`` (sorted)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Video folder not found: {directory}")
    paths = sorted(glob.glob(os.path.join(directory, "**", "*.mp4"), recursive=True))
    if not paths:
        raise ValueError(f"No .mp4 files under {directory}.")
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
) -> List[Dict[str, float]]:
    """Train a CV-VAE on the mp4 clips under ``videos`` and save it to ``output_dir``: ``repvideo vae train``.

    The video VAE is inflated from the diffusers ``AutoencoderKL`` folder ``image_vae`` (``variant`` ``"v1"``: 4
    latent channels, ``"sd3"``: 16), or continues the CV-VAE folder ``init``; the image VAE stays frozen and keeps
    the latent space. The clips are checked before any model is loaded. Returns the per-step loss history.

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

    dataset = VideoClipDataset(find_videos(videos), num_frames=num_frames, size=resolution)
    frozen = AutoencoderKL.from_pretrained(image_vae, subfolder=image_vae_subfolder)
    vae = load_cvvae(init) if init else inflate_image_vae(frozen, variant)
    return train_cvvae(vae, frozen, dataset, config, output_dir=output_dir, on_step=on_step)

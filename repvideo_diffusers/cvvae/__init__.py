"""CV-VAE (arXiv 2405.20279) for Hugging Face diffusers: video VAEs whose latent space is an image VAE's.

Example:
    >>> import torch
    >>> from repvideo_diffusers.cvvae import CVVAEModel
    >>> vae = CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None)
    >>> vae.decode(vae.encode(torch.zeros(1, 3, 5, 32, 32)).latent_dist.mode()).sample.shape
    torch.Size([1, 3, 5, 32, 32])
"""

from .attention import attention_backend
from .inflation import inflate_image_vae
from .loading import load_cvvae
from .metrics import psnr, ssim
from .modeling import CVVAEModel
from .modeling_sd3 import CVVAESD3Model
from .regularization import latent_regularization_loss, regularization_targets
from .training import CVVAETrainingConfig, compute_losses, train_cvvae

__all__ = [
    "CVVAEModel",
    "CVVAESD3Model",
    "CVVAETrainingConfig",
    "attention_backend",
    "compute_losses",
    "inflate_image_vae",
    "latent_regularization_loss",
    "load_cvvae",
    "psnr",
    "regularization_targets",
    "ssim",
    "train_cvvae",
]

"""CV-VAE (arXiv 2405.20279) for Hugging Face diffusers."""

from .modeling import CVVAEModel

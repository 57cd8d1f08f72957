"""CV-VAE (arXiv 2405.20279) for Hugging Face diffusers."""

from .modeling import CVVAEModel
from .modeling_sd3 import CVVAESD3Model

"""repvideo-diffusers: RepVideo (arXiv 2501.08994) and CV-VAE (arXiv 2405.20279) for Hugging Face diffusers."""

__version__ = "0.1.0.dev0"

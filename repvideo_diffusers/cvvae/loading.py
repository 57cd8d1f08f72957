"""Load whichever CV-VAE a folder holds (v1 / v1-1 or SD3), by the class name in its ``config.json``."""

import json
import os
from typing import Optional

from .modeling import CVVAEModel
from .modeling_sd3 import CVVAESD3Model

CLASSES = {"CVVAEModel": CVVAEModel, "CVVAESD3Model": CVVAESD3Model}


def load_cvvae(path: str, subfolder: Optional[str] = None, **kwargs):
    """``CVVAEModel`` or ``CVVAESD3Model`` ``from_pretrained(path)``, chosen by the config's ``_class_name``.

    Example::

        vae = load_cvvae("/models/CV-VAE", subfolder="vae3d_sd3")   # -> CVVAESD3Model
    """
    folder = os.path.join(path, subfolder) if subfolder else path
    config_path = os.path.join(folder, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(
            f"No CV-VAE config at {config_path}. Point --vae at a folder with config.json and "
            "diffusion_pytorch_model.safetensors (e.g. a download of AILab-CVC/CV-VAE/vae3d)."
        )
    with open(config_path) as handle:
        class_name = json.load(handle).get("_class_name", "CVVAEModel")
    if class_name not in CLASSES:
        raise ValueError(f"{config_path} describes a {class_name!r}; expected one of {sorted(CLASSES)}.")
    return CLASSES[class_name].from_pretrained(folder, **kwargs)

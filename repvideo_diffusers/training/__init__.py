"""Training RepVideo's gates (and optionally LoRA or all weights) with accelerate: ``repvideo train``."""

from .config import TrainConfig, TrainResult
from .objectives import OBJECTIVES, objective_for
from .trainer import train, training_loss

__all__ = ["OBJECTIVES", "TrainConfig", "TrainResult", "objective_for", "train", "training_loss"]

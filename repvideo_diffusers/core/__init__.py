"""The technique itself: `RepVideoConfig`, the feature-cache hooks, the learned gates, the pipeline methods."""

from .config import RepVideoConfig
from .gates import RepVideoGates, load_gates
from .hooks import apply_repvideo, is_repvideo_applied, remove_repvideo

__all__ = ["RepVideoConfig", "RepVideoGates", "apply_repvideo", "is_repvideo_applied", "load_gates", "remove_repvideo"]

"""Training RepVideo's gates (and optionally LoRA or all weights) with accelerate: ``repvideo train``.

The names below are imported on first use (PEP 562), so that ``repvideo --help`` reads `training.config` without
importing torch.
"""

import importlib as _importlib

_EXPORTS = {
    "TrainConfig": "config",
    "TrainResult": "config",
    "OBJECTIVES": "objectives",
    "objective_for": "objectives",
    "train": "trainer",
    "training_loss": "trainer",
}


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = sorted(_EXPORTS)

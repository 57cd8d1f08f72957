"""repvideo-diffusers: RepVideo (arXiv 2501.08994) and CV-VAE (arXiv 2405.20279) for Hugging Face diffusers.

``import repvideo_diffusers`` gives every ``diffusers.DiffusionPipeline`` ``enable_repvideo()`` and
``disable_repvideo()`` (`repvideo_diffusers.core.pipeline.install`; `uninstall` undoes it). ``import
repvideo_diffusers.cvvae`` alone, for the CV-VAE only, patches nothing; nor does importing the command line
(`repvideo_diffusers.cli`), whose commands install the methods when they run a pipeline.
"""

__version__ = "0.1.0.dev0"

import importlib as _importlib

from . import _compat

_compat.warn_if_unsupported_diffusers()

# Public names, imported on first use (PEP 562), so that importing a subpackage stays light.
_EXPORTS = {
    "RepVideoConfig": "core.config",
    "RepVideoGates": "core.gates",
    "load_gates": "core.gates",
    "apply_repvideo": "core.hooks",
    "remove_repvideo": "core.hooks",
    "is_repvideo_applied": "core.hooks",
    "SUPPORTED_MODELS": "core.hooks",
    "get_transformer_blocks": "families",
    "register_family": "families",
    "capture_attention": "attention",
    "set_attention_kernel": "attention",
    "get_attention_kernel": "attention",
    "reset_attention_kernel": "attention",
    "set_attention_backend": "attention",  # deprecated aliases (FutureWarning when called)
    "get_attention_backend": "attention",
    "reset_attention_backend": "attention",
}


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])


def install() -> None:
    """Add ``enable_repvideo`` / ``disable_repvideo`` to every diffusers pipeline (done by ``import
    repvideo_diffusers``; needed by hand only after importing ``repvideo_diffusers.cvvae`` first)."""
    from .core import pipeline

    pipeline.install()


# `import repvideo_diffusers.cvvae` alone patches nothing; the command line (`repvideo ...`) installs the methods
# only when a command runs a pipeline, so that `repvideo --help` does not wait for diffusers to import.
if not (_compat.module_being_imported() or "").startswith((f"{__name__}.cvvae", f"{__name__}.cli")):
    install()

__all__ = ["__version__", "install", *_EXPORTS]

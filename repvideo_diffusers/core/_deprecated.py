"""Deprecated views of the family registry, kept importable from `repvideo_diffusers.core.hooks` (and the package
root) for one release: use `repvideo_diffusers.families` (`get_family`, `registered_families`) instead."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch

from ..families import get_family, registered_families


class ModelSpec(NamedTuple):
    """Deprecated view of a registered family: its name and block lists (use `repvideo_diffusers.families`)."""

    family: str
    block_lists: tuple[str, ...]


class _SupportedModels(Mapping):
    """``{transformer class name: ModelSpec}``, read live from the family registry (kept for compatibility; the
    registry, `repvideo_diffusers.families.registered_families()`, says more)."""

    def _table(self) -> dict:
        return {
            cls if isinstance(cls, str) else cls.__name__: ModelSpec(family.name, tuple(b.attribute for b in family.blocks))
            for family in registered_families().values() for cls in family.transformers
        }

    def __getitem__(self, key):
        return self._table()[key]

    def __iter__(self):
        return iter(self._table())

    def __len__(self):
        return len(self._table())

    def __repr__(self):
        return repr(self._table())


SUPPORTED_MODELS: Mapping[str, ModelSpec] = _SupportedModels()


def get_model_spec(transformer: torch.nn.Module) -> ModelSpec:
    """Deprecated: `repvideo_diffusers.families.get_family`."""
    family = get_family(transformer)
    return ModelSpec(family.name, tuple(b.attribute for b in family.blocks))

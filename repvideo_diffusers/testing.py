"""Tiny random transformers of every registered family, with matching forward inputs (tests, benchmarks, examples).

A view of the family registry (`repvideo_diffusers.families`, each family's ``tiny`` and ``variants``)::

    >>> from repvideo_diffusers.testing import TINY_MODELS
    >>> transformer, inputs = TINY_MODELS["Wan"].build(seed=0)
    >>> transformer(**inputs, return_dict=False)[0].shape
    torch.Size([2, 4, 3, 8, 8])
"""

from __future__ import annotations

from collections.abc import Mapping

from .families import TinyModel, registered_families


class _Tiny(Mapping):
    """``{name: TinyModel}`` read live from the registry (a family registered later appears too)."""

    def __init__(self, variants: bool):
        self.variants = variants

    def _table(self) -> dict[str, TinyModel]:
        families = registered_families().values()
        if self.variants:
            return {name: tiny for family in families for name, tiny in family.variants.items()}
        return {family.name: family.tiny for family in families if family.tiny is not None}

    def __getitem__(self, name):
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self):
        return len(self._table())


TINY_MODELS: Mapping[str, TinyModel] = _Tiny(variants=False)
TINY_VARIANTS: Mapping[str, TinyModel] = _Tiny(variants=True)

"""The model-family registry: every fact RepVideo needs about one video transformer, in one registered object.

A `Family` says which transformer classes it covers, which block lists run in which order and which streams each
block takes and returns (the facts the feature cache needs), and optionally what attention capture needs
(`AttentionFacts`), how `repvideo train` turns videos and captions into transformer inputs (`TrainingFacts`) and a
tiny random configuration for tests (`TinyModel`). The shared code (hooks, attention, training, analysis) reads
these objects and never names a family.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import torch


@dataclass(frozen=True)
class BlockList:
    """One list of transformer blocks and the streams that flow from block to block through it.

    Args:
        attribute: name of the ``nn.ModuleList`` on the transformer (``"transformer_blocks"``).
        streams: the block ``forward`` parameters RepVideo blends, video stream first (``("hidden_states",
            "encoder_hidden_states")`` for joint attention, ``("hidden_states",)`` when text enters through
            cross-attention as an unchanged condition).
        outputs: where each stream sits in the block's output tuple, in the order of ``streams``; ``None`` when
            the block returns the video stream alone (a tensor).
        to_canonical / from_canonical: for a model that lays the video stream out differently in different block
            lists (Latte: frames as batch in spatial blocks, tokens as batch in temporal blocks), ``(stream,
            context) -> stream`` to the one layout the feature cache holds and back; ``context`` is what the
            family's ``forward_context`` returned for the current forward call. ``None``: the stream is cached as
            it flows.
    """

    attribute: str
    streams: tuple[str, ...] = ("hidden_states",)
    outputs: tuple[int, ...] | None = None
    to_canonical: Callable[[torch.Tensor, dict], torch.Tensor] | None = None
    from_canonical: Callable[[torch.Tensor, dict], torch.Tensor] | None = None

    def __post_init__(self):
        if (self.to_canonical is None) != (self.from_canonical is None):
            raise ValueError(
                f"BlockList {self.attribute!r}: give both to_canonical and from_canonical (a layout and its inverse), "
                "or neither."
            )
        if not self.streams:
            raise ValueError(f"BlockList {self.attribute!r} needs at least one stream (the video stream first).")
        if self.outputs is None and len(self.streams) != 1:
            raise ValueError(
                f"BlockList {self.attribute!r} blends {len(self.streams)} streams {self.streams}, so `outputs` must "
                "say where each one sits in the block's output tuple, e.g. outputs=(0, 1)."
            )
        if self.outputs is not None and len(self.outputs) != len(self.streams):
            raise ValueError(
                f"BlockList {self.attribute!r}: {len(self.streams)} streams {self.streams} but {len(self.outputs)} "
                f"output positions {self.outputs}; give one position per stream."
            )


@dataclass(frozen=True)
class AttentionFacts:
    """What attention routing and capture need about one family.

    Args:
        captured: name of the attention module inside each block whose map is recorded (self / joint attention);
            a dotted path for one nested deeper (``"video_dec_block.self_attention"``).
        text_first: whether other tokens (text; Helios: history) come before the video tokens in that attention's
            key sequence (and in a block's output, where the stream holds both).
        grid: ``(transformer, forward args, forward kwargs) -> (t, h, w)``, the video token grid of a forward call.
        processors: class names of the stock diffusers attention processors this family uses. Every one of them
            must compute its attention with ``torch.nn.functional.scaled_dot_product_attention`` (directly or
            through diffusers' ``native`` backend): that call is where RepVideo routes the kernel and records maps.
        drops_padding: whether the stock processor drops padded text tokens sample by sample (Mochi): the
            recorded rows are padded back to video + text tokens so every sample has the same key axis.
    """

    captured: str
    text_first: bool
    grid: Callable[[torch.nn.Module, tuple, dict], tuple[int, int, int]]
    processors: tuple[str, ...]
    drops_padding: bool = False


@dataclass(frozen=True)
class TrainingFacts:
    """How `repvideo train` turns pixels and text into the inputs of one family's transformer.

    Args:
        default_size: ``pipe -> (height, width, num_frames)``, the pipeline's own defaults.
        encode_video: ``(pipe, video (1, 3, F, H, W) in [-1, 1], generator) ->`` latents without batch dim, or a
            dict with ``"latents"`` and whatever else the forward needs per clip.
        encode_prompt: ``(pipe, text, max_sequence_length) ->`` embeddings without batch dim, or a dict with
            ``"prompt_embeds"`` (and masks / pooled embeddings the transformer takes).
        max_sequence_length: ``pipe -> int``, the text length the pipeline uses by default.
        forward_kwargs: ``(pipe, noisy latents, batch, timestep) ->`` the transformer's keyword arguments.
        size_multiples: ``pipe -> (temporal compression, multiple of height and width)``; ``None``: the
            pipeline's ``vae_scale_factor_temporal`` and twice its ``vae_scale_factor_spatial``.
    """

    default_size: Callable
    encode_video: Callable
    encode_prompt: Callable
    max_sequence_length: Callable
    forward_kwargs: Callable
    size_multiples: Callable | None = None


@dataclass(frozen=True)
class TinyModel:
    """A tiny random configuration of a family's transformer and matching forward inputs (tests, examples).

    Example:
        ```python
        >>> from repvideo_diffusers.families import get_family_by_name
        >>> transformer, inputs = get_family_by_name("Wan").tiny.build(seed=0)
        >>> transformer(**inputs, return_dict=False)[0].shape
        torch.Size([2, 4, 3, 8, 8])

        ```
    """

    family: str
    make_transformer: Callable[[], torch.nn.Module]
    make_inputs: Callable[[torch.Generator, int], dict]
    num_blocks: int

    def build(self, seed: int = 0, batch_size: int = 2, dtype: torch.dtype = torch.float32):
        """(transformer in eval mode, forward kwargs), both seeded."""
        torch.manual_seed(seed)
        transformer = self.make_transformer().eval()
        if dtype != torch.float32:
            transformer.to(dtype)
        inputs = self.make_inputs(torch.Generator().manual_seed(seed + 1000), batch_size)
        inputs = {k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v for k, v in inputs.items()}
        return transformer, inputs


@dataclass(frozen=True)
class Family:
    """Everything RepVideo knows about one family of video transformers.

    Args:
        name: the family's name (``"CogVideoX"``), recorded in saved gates.
        transformers: the transformer classes it covers, as classes or class names (subclasses match too).
        blocks: the block lists in execution order; the gates are numbered across all of them.
        attention: facts for attention routing and capture (`AttentionFacts`), or ``None``.
        training: facts for ``repvideo train`` (`TrainingFacts`), or ``None``.
        tiny: a tiny random configuration (`TinyModel`), or ``None``.
        variants: more tiny configurations of the same classes (other released variants), by name.
        notes: one line for the README's table: what is gated and blended, and why.
        execution_order: ``transformer -> [(BlockList, block), ...]`` when the model does not run its block lists
            one after the other (Latte interleaves a spatial and a temporal block); ``None``: list by list.
        forward_context: ``(transformer, forward args, forward kwargs) -> dict`` computed once per forward call and
            handed to the block lists' ``to_canonical`` / ``from_canonical`` (batch size, frames, ...).
    """

    name: str
    transformers: tuple[type | str, ...]
    blocks: tuple[BlockList, ...]
    attention: AttentionFacts | None = None
    training: TrainingFacts | None = None
    tiny: TinyModel | None = None
    variants: Mapping[str, TinyModel] = field(default_factory=dict)
    notes: str = ""
    execution_order: Callable[[torch.nn.Module], list[tuple[BlockList, torch.nn.Module]]] | None = None
    forward_context: Callable[[torch.nn.Module, tuple, dict], dict] | None = None

    def matches(self, cls: type) -> bool:
        """Whether ``cls`` (or one of its base classes) is a transformer class of this family."""
        return self.match_depth(cls) is not None

    def match_depth(self, cls: type) -> int | None:
        """How far up ``cls``'s MRO the first class of this family sits (0: ``cls`` itself), or ``None``."""
        for depth, base in enumerate(cls.__mro__):
            for wanted in self.transformers:
                if base is wanted or (isinstance(wanted, str) and base.__name__ == wanted):
                    return depth
        return None

    def block_lists(self, transformer: torch.nn.Module) -> Iterator[tuple[BlockList, torch.nn.Module]]:
        """(block list facts, block) for every block, in execution order."""
        if self.execution_order is not None:
            yield from self.execution_order(transformer)
            return
        for block_list in self.blocks:
            for block in getattr(transformer, block_list.attribute):
                yield block_list, block

    def transformer_blocks(self, transformer: torch.nn.Module) -> list[torch.nn.Module]:
        """The gated blocks in execution order."""
        return [block for _, block in self.block_lists(transformer)]


_FAMILIES: dict[str, Family] = {}


def _class_name(cls: type | str) -> str:
    return cls if isinstance(cls, str) else cls.__name__


def register_family(family: Family, *, replace: bool = False) -> Family:
    """Make a model family known to RepVideo; returns it.

    Built-in families register themselves this way, one module each under ``repvideo_diffusers/families/``; your
    own code can do the same for a transformer of its own.

    Raises:
        `ValueError`: a family of that name, or one covering one of the same transformer classes, is already
        registered (pass ``replace=True`` to replace it), or the family is incomplete.

    Example:
        ```python
        >>> import torch
        >>> from repvideo_diffusers import RepVideoConfig, apply_repvideo
        >>> from repvideo_diffusers.families import BlockList, Family, register_family, unregister_family

        >>> class Block(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.linear = torch.nn.Linear(4, 4)
        ...     def forward(self, hidden_states):
        ...         return self.linear(hidden_states)
        >>> class Toy(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layers = torch.nn.ModuleList(Block() for _ in range(3))
        ...     def forward(self, hidden_states):
        ...         for layer in self.layers:
        ...             hidden_states = layer(hidden_states)
        ...         return hidden_states
        >>> _ = register_family(Family("Toy", transformers=(Toy,), blocks=(BlockList("layers"),)))
        >>> apply_repvideo(Toy(), RepVideoConfig(window=2)).gate.shape
        torch.Size([3])
        >>> unregister_family("Toy")

        ```
    """
    if not isinstance(family, Family):
        raise ValueError(f"register_family takes a Family, got {type(family).__name__}. Build one with Family(...).")
    if not family.name or not family.transformers or not family.blocks:
        raise ValueError(
            f"Family {family.name!r} is incomplete: it needs a name, at least one transformer class and at least one "
            "BlockList (the blocks in execution order)."
        )
    if family.name in _FAMILIES and not replace:
        raise ValueError(
            f"A family named {family.name!r} is already registered. Pass replace=True to replace it, or choose "
            "another name."
        )
    wanted = {_class_name(cls) for cls in family.transformers}
    for other in _FAMILIES.values():
        clash = wanted & {_class_name(cls) for cls in other.transformers}
        if clash and other.name != family.name:
            if not replace:
                raise ValueError(
                    f"{sorted(clash)} already belong to the family {other.name!r}. Pass replace=True to move them to "
                    f"{family.name!r}, or unregister_family({other.name!r}) first."
                )
    if replace:
        for other in list(_FAMILIES.values()):
            if other.name != family.name and wanted & {_class_name(cls) for cls in other.transformers}:
                del _FAMILIES[other.name]
    _FAMILIES[family.name] = family
    return family


def unregister_family(name: str) -> None:
    """Forget a registered family (does nothing if there is none of that name)."""
    _FAMILIES.pop(name, None)


def registered_families() -> dict[str, Family]:
    """Every registered family by name (a copy: changing it changes nothing)."""
    return dict(_FAMILIES)


def find_family(transformer: torch.nn.Module | type) -> Family | None:
    """The family of a transformer (or transformer class), or ``None``."""
    cls = transformer if isinstance(transformer, type) else type(transformer)
    # The most specific family wins: a subclass of a registered transformer (SkyReels-V2 of Wan, say) that has a
    # family of its own gets that one, whatever the registration order.
    found = [(depth, order, family) for order, family in enumerate(_FAMILIES.values())
             if (depth := family.match_depth(cls)) is not None]
    return min(found, key=lambda item: item[:2])[2] if found else None


def supported_transformers() -> str:
    """``"CogVideoX (CogVideoXTransformer3DModel), ..."``: for error messages."""
    return ", ".join(
        f"{family.name} ({', '.join(_class_name(cls) for cls in family.transformers)})" for family in _FAMILIES.values()
    )


def get_family(transformer: torch.nn.Module | type) -> Family:
    """The family of a transformer, or a `ValueError` naming every supported transformer class."""
    family = find_family(transformer)
    if family is None:
        name = transformer.__name__ if isinstance(transformer, type) else type(transformer).__name__
        raise ValueError(
            f"RepVideo does not support {name}. Supported transformers: {supported_transformers()}. Pass the "
            "pipeline's video transformer (for example `pipe.transformer`), or describe yours with "
            "`repvideo_diffusers.families.register_family(Family(...))`."
        )
    return family


def get_family_by_name(name: str) -> Family:
    """A registered family by its name (``"Wan"``), or a `ValueError` listing the names."""
    if name not in _FAMILIES:
        raise ValueError(f"No model family named {name!r} is registered. Registered: {', '.join(_FAMILIES)}.")
    return _FAMILIES[name]


def get_transformer_blocks(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The gated transformer blocks of a supported model, in execution order (the order of the gates)."""
    return get_family(transformer).transformer_blocks(transformer)


def stream_positions(block_class: type, block_list: BlockList) -> list[int]:
    """Positional index of each blended stream among ``block_class.forward``'s parameters (after ``self``).

    Raises `ValueError` when the block's ``forward`` has no parameter of a declared stream's name.
    """
    parameters = list(inspect.signature(block_class.forward).parameters)[1:]
    missing = [name for name in block_list.streams if name not in parameters]
    if missing:
        raise ValueError(
            f"{block_class.__name__}.forward has no parameter {missing} (it takes {parameters}): the family's "
            f"BlockList({block_list.attribute!r}, streams={block_list.streams}) does not describe this block."
        )
    return [parameters.index(name) for name in block_list.streams]

"""The model-family registry: a user registers a transformer of their own and RepVideo runs on it exactly.

The toy transformer below is defined here, not in the package: a joint-attention-like block list that takes and
returns two streams, then a block list that takes one. The reference is the official algorithm written out by hand
(a Python list as the cache, ``stack(cache).mean(0)``, ``g * m + (1 - g) * h``), independent of the package.
"""

import pytest
import torch

from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo
from repvideo_diffusers.families import (
    BlockList,
    Family,
    TinyModel,
    get_family,
    get_family_by_name,
    register_family,
    registered_families,
    unregister_family,
)


class PairBlock(torch.nn.Module):
    """Takes (text, video) in an unusual order and returns (text, video): positions come from the family facts."""

    def __init__(self, width):
        super().__init__()
        self.video = torch.nn.Linear(width, width)
        self.text = torch.nn.Linear(width, width)

    def forward(self, context, video, scale):
        mixed = video + context.mean(1, keepdim=True)
        return torch.tanh(self.text(context)) * scale, torch.tanh(self.video(mixed)) * scale


class VideoBlock(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = torch.nn.Linear(width, width)

    def forward(self, video, scale=1.0):
        return torch.tanh(self.linear(video)) * scale


class ToyTransformer(torch.nn.Module):
    def __init__(self, width=8, pairs=3, singles=3):
        super().__init__()
        self.pairs = torch.nn.ModuleList(PairBlock(width) for _ in range(pairs))
        self.singles = torch.nn.ModuleList(VideoBlock(width) for _ in range(singles))
        self.head = torch.nn.Linear(width, width)

    def forward(self, video, context):
        scale = 1.5
        for block in self.pairs:
            context, video = block(context, video, scale)
        for block in self.singles:
            video = block(video, scale=scale)
        return self.head(video)


TOY = Family(
    name="Toy",
    transformers=(ToyTransformer,),
    blocks=(
        BlockList("pairs", streams=("video", "context"), outputs=(1, 0)),
        BlockList("singles", streams=("video",)),
    ),
    tiny=TinyModel(
        "Toy", lambda: ToyTransformer(),
        lambda g, b: {"video": torch.randn(b, 5, 8, generator=g), "context": torch.randn(b, 3, 8, generator=g)}, 6,
    ),
)


@pytest.fixture
def toy():
    register_family(TOY)
    yield TOY
    unregister_family("Toy")


def official_loop(transformer, inputs, gates, window):
    """The official algorithm around the unmodified toy model (the cache mixes the streams each block passes on)."""
    video, context = inputs["video"], inputs["context"]
    cache = [(video, context)]
    index = 0
    with torch.no_grad():
        for block in transformer.pairs:
            g = gates[index]
            means = [torch.stack([entry[s] for entry in cache]).mean(0) for s in range(2)]
            video, context = g * means[0] + (1 - g) * video, g * means[1] + (1 - g) * context
            context, video = block(context, video, 1.5)
            cache = [(video, context)] if index % window == 0 else cache + [(video, context)]
            index += 1
        for block in transformer.singles:
            g = gates[index]
            mean = torch.stack([entry[0] for entry in cache]).mean(0)
            video = g * mean + (1 - g) * video
            video = block(video, scale=1.5)
            cache = [(video,)] if index % window == 0 else cache + [(video,)]
            index += 1
        return transformer.head(video)


def run(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs)


@pytest.mark.parametrize("window", [2, 3])
def test_a_family_registered_in_user_code_matches_the_official_loop(toy, window):
    transformer, inputs = toy.tiny.build(seed=0)
    vanilla = run(transformer, inputs)
    gate_values = torch.rand(6, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1
    expected = official_loop(transformer, inputs, gate_values, window)

    gates = apply_repvideo(transformer, RepVideoConfig(window=window))
    assert gates.config.model_family == "Toy" and gates.gate.shape == (6,)
    with torch.no_grad():
        gates.gate.copy_(gate_values)
    actual = run(transformer, inputs)
    assert (actual - expected).abs().max().item() <= 1e-6
    assert (actual - vanilla).abs().max().item() > 1e-3  # the blend really changed something

    remove_repvideo(transformer)
    assert torch.equal(run(transformer, inputs), vanilla)
    assert not hasattr(transformer, "repvideo_gates")
    assert all("forward" not in vars(block) for block in [*transformer.pairs, *transformer.singles])


def test_zero_gates_on_a_registered_family_give_the_vanilla_output_bitwise(toy):
    transformer, inputs = toy.tiny.build(seed=1)
    vanilla = run(transformer, inputs)
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.0))
    assert torch.equal(run(transformer, inputs), vanilla)


def test_unregistered_models_are_refused_naming_the_registered_families_and_left_untouched():
    transformer = ToyTransformer()
    with pytest.raises(ValueError, match=r"does not support ToyTransformer\. Supported transformers: .*CogVideoX "
                                         r"\(CogVideoXTransformer3DModel\).*register_family") as error:
        apply_repvideo(transformer)
    for family in registered_families().values():  # every registered family is named
        assert f"{family.name} (" in str(error.value)
    assert not hasattr(transformer, "repvideo_gates")
    assert all("forward" not in vars(block) for block in transformer.pairs)


def test_a_family_whose_streams_do_not_match_the_block_is_refused_before_anything_changes(toy):
    wrong = Family("Wrong", transformers=("ToyTransformer",), blocks=(BlockList("pairs", ("hidden_states",)),))
    register_family(wrong, replace=True)
    try:
        transformer = ToyTransformer()
        with pytest.raises(ValueError, match=r"PairBlock\.forward has no parameter \['hidden_states'\]"):
            apply_repvideo(transformer)
        assert not hasattr(transformer, "repvideo_gates")
        assert all("forward" not in vars(block) for block in transformer.pairs)
    finally:
        unregister_family("Wrong")


def test_registering_a_taken_name_or_class_needs_replace(toy):
    with pytest.raises(ValueError, match="already registered.*replace=True"):
        register_family(TOY)
    clash = Family("Toy2", transformers=(ToyTransformer,), blocks=(BlockList("singles"),))
    with pytest.raises(ValueError, match=r"already belong to the family 'Toy'"):
        register_family(clash)
    register_family(clash, replace=True)
    try:
        assert get_family(ToyTransformer()).name == "Toy2" and "Toy" not in registered_families()
    finally:
        unregister_family("Toy2")


@pytest.mark.parametrize("bad, message", [
    (dict(streams=("a", "b")), "so `outputs` must say where each one sits"),
    (dict(streams=("a", "b"), outputs=(0,)), "give one position per stream"),
    (dict(streams=()), "needs at least one stream"),
])
def test_block_list_facts_are_checked_when_written(bad, message):
    with pytest.raises(ValueError, match=message):
        BlockList("blocks", **bad)


def test_every_built_in_family_is_one_module_holding_all_its_facts():
    import repvideo_diffusers.families as package

    for name, family in registered_families().items():
        module = family.tiny.make_transformer.__module__
        assert module.startswith(package.__name__ + "."), (name, module)
        assert family.tiny is not None and family.notes, name  # a test configuration and a README cell, each
        if name in ("CogVideoX", "Wan", "HunyuanVideo", "LTX-Video", "Mochi"):  # the first five: every fact
            assert family.attention is not None and family.training is not None
        if family.training is not None:
            assert all(getattr(family.training, f) is not None
                       for f in ("encode_video", "encode_prompt", "forward_kwargs")), name
    assert get_family_by_name("HunyuanVideo").blocks[1].attribute == "single_transformer_blocks"


def test_the_most_specific_family_wins_for_a_subclass(toy):
    class FancyToy(ToyTransformer):
        pass

    assert get_family(FancyToy()).name == "Toy"  # a subclass of a registered class gets its family ...
    fancy = Family("FancyToy", transformers=(FancyToy,), blocks=(BlockList("singles"),))
    register_family(fancy)
    try:
        assert get_family(FancyToy()).name == "FancyToy"  # ... unless it has one of its own, registered in any order
        assert get_family(ToyTransformer()).name == "Toy"
    finally:
        unregister_family("FancyToy")


def _readme_families_table() -> dict[str, list[str]]:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = text[text.index("<!-- families-table -->"):].split("\n\n")[0].splitlines()[3:]
    rows = {}
    for line in table:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def test_the_readme_table_lists_every_registered_family_with_its_class_and_tools():
    rows = _readme_families_table()
    families = registered_families()
    assert set(rows) == set(families)
    for name, family in families.items():
        classes = [cls if isinstance(cls, str) else cls.__name__ for cls in family.transformers]
        assert all(f"`{cls}`" in rows[name][1] for cls in classes), name
        generate, train, analyze, convert = [cell.split()[0] for cell in rows[name][4].split(" / ")]
        assert train == ("yes" if family.training else "no"), name
        if analyze == "yes":
            assert family.attention is not None, name
        assert convert == ("yes" if name == "CogVideoX" else "no"), name

"""RepVideo computes exactly the official algorithm on every supported family (REPVIDEO.md).

The reference (tests/reference_loop.py) is written independently of the package: plain torch module hooks, the cache
kept as a Python list and averaged with ``torch.stack(cache).mean(0)`` at every block, and the blend written as
``g * m + (1 - g) * h``, exactly as the official code does it.
"""

import pytest
import torch
from reference_loop import official_output

from repvideo_diffusers import RepVideoConfig, apply_repvideo, get_transformer_blocks, remove_repvideo
from repvideo_diffusers.testing import TINY_MODELS, TINY_VARIANTS

# The first five families plus CogVideoX 5B-I2V / 1.5-T2V / 1.5-I2V configurations; every later family has a test
# file of its own (tests/test_family_*.py, through tests/family_checks.py).
MODELS = {**{name: TINY_MODELS[name] for name in ("CogVideoX", "Wan", "HunyuanVideo", "LTX-Video", "Mochi")},
          **TINY_VARIANTS}
FAMILIES = sorted(MODELS)
# Which families blend the text stream too (joint attention), stated here, not read from the package.
JOINT = {"CogVideoX": True, "HunyuanVideo": True, "Mochi": True, "Wan": False, "LTX-Video": False}
JOINT.update({variant: True for variant in TINY_VARIANTS})
BLOCK_LISTS = {
    **{variant: ["transformer_blocks"] for variant in TINY_VARIANTS},
    "CogVideoX": ["transformer_blocks"],
    "Wan": ["blocks"],
    "HunyuanVideo": ["transformer_blocks", "single_transformer_blocks"],
    "LTX-Video": ["transformer_blocks"],
    "Mochi": ["transformer_blocks"],
}


def reference_output(transformer, inputs, gates, window, joint):
    """Official RepVideo loop, emulated around the unmodified blocks with torch hooks (tests/reference_loop.py)."""
    names = ("hidden_states", "encoder_hidden_states") if joint else ("hidden_states",)
    outputs = (0, 1) if joint else None
    lists = [(name, names, outputs) for name in BLOCK_LISTS[transformer._family]]
    return official_output(transformer, inputs, gates, window, lists)


def build(family, seed=0):
    transformer, inputs = MODELS[family].build(seed=seed)
    transformer._family = family
    return transformer, inputs


def run(transformer, inputs):
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_gates_give_exactly_the_vanilla_output(family):
    transformer, inputs = build(family)
    vanilla = run(transformer, inputs)
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.0))
    assert torch.equal(run(transformer, inputs), vanilla)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(family, window):
    transformer, inputs = build(family)
    num_blocks = len(get_transformer_blocks(transformer))
    gate_values = torch.rand(num_blocks, generator=torch.Generator().manual_seed(7)) * 0.8 + 0.1  # in (0, 1)
    expected = reference_output(transformer, inputs, gate_values, window, JOINT[family])
    vanilla = run(transformer, inputs)

    gates = apply_repvideo(transformer, RepVideoConfig(window=window))
    with torch.no_grad():
        gates.gate.copy_(gate_values)
    actual = run(transformer, inputs)

    assert (actual - expected).abs().max().item() <= 1e-5
    # and the blend really changed something, so the comparison above is not vacuous
    assert (actual - vanilla).abs().max().item() > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
def test_remove_repvideo_gives_bitwise_vanilla_output(family):
    transformer, inputs = build(family)
    vanilla = run(transformer, inputs)
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.7))
    assert not torch.equal(run(transformer, inputs), vanilla)
    remove_repvideo(transformer)
    assert torch.equal(run(transformer, inputs), vanilla)
    assert not hasattr(transformer, "repvideo_gates")
    assert all(not hasattr(block, "_diffusers_hook") for block in get_transformer_blocks(transformer))
    assert all("forward" not in vars(block) for block in get_transformer_blocks(transformer))


def test_window_one_makes_every_blend_a_no_op():
    transformer, inputs = build("CogVideoX")
    vanilla = run(transformer, inputs)
    apply_repvideo(transformer, RepVideoConfig(window=1, gate_init=0.9))
    assert torch.equal(run(transformer, inputs), vanilla)


def test_first_two_blocks_are_untouched_by_the_gate():
    # mean(cache) == h before blocks 0 and 1: only gates from block 2 on can change the output.
    transformer, inputs = build("CogVideoX")
    vanilla = run(transformer, inputs)
    gates = apply_repvideo(transformer, RepVideoConfig(window=6, gate_init=0.0))
    with torch.no_grad():
        gates.gate[:2] = 0.9
    assert torch.equal(run(transformer, inputs), vanilla)
    with torch.no_grad():
        gates.gate[2] = 0.9
    assert (run(transformer, inputs) - vanilla).abs().max().item() > 1e-3


def test_blocks_are_gated_in_execution_order_across_block_lists():
    # HunyuanVideo: 2 double-stream blocks then 3 single-stream blocks, one gate each, one cache across both.
    transformer, _ = build("HunyuanVideo")
    gates = apply_repvideo(transformer)
    blocks = get_transformer_blocks(transformer)
    assert gates.gate.shape == (5,)
    assert blocks == [*transformer.transformer_blocks, *transformer.single_transformer_blocks]

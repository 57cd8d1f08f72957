"""RepVideo on MiniMax-H3 (`MiniMaxH3Transformer3DModel`, joint video + audio): the family properties of
tests/family_checks.py on the packed sequence, and the audio output (which the checks do not look at).

No pipeline test: MiniMax-H3 ships only a modular pipeline (`MiniMaxH3ModularPipeline`), which is no
`DiffusionPipeline`, so it has no ``enable_repvideo``; `apply_repvideo(pipe.transformer)` is how to use it there.
"""

import diffusers
import pytest
import torch

import family_checks as checks
from repvideo_diffusers import RepVideoConfig, apply_repvideo, remove_repvideo
from repvideo_diffusers.families import get_family_by_name, get_transformer_blocks

if not hasattr(diffusers, "MiniMaxH3Transformer3DModel"):
    pytest.skip("this diffusers has no MiniMaxH3Transformer3DModel", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = get_family_by_name("MiniMax-H3").tiny
# Stated here, not read from the package: one block list; each block takes the packed sequence (text, audio and
# video rows) and returns it as a tensor.
BLOCK_LISTS = [("transformer_blocks", ("hidden_states",), None)]


def test_zero_gates_give_the_vanilla_output():
    checks.assert_zero_gates_give_the_vanilla_output(TINY)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(window):
    checks.assert_random_gates_match_the_official_loop(TINY, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    checks.assert_remove_gives_the_original_bitwise(TINY)


def test_checkpointing_gives_the_same_loss_and_gradients():
    checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY)


def test_the_audio_output_follows_the_gates_too():
    """The audio rows are part of the blended stream: zero gates keep the audio bitwise, 0.6 gates change it,
    removing RepVideo restores it."""
    transformer, inputs = TINY.build()
    with torch.no_grad():
        vanilla = transformer(**inputs, return_dict=False)[1]
    gates = apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.0))
    with torch.no_grad():
        assert torch.equal(transformer(**inputs, return_dict=False)[1], vanilla)
        gates.gate.fill_(0.6)
        assert (transformer(**inputs, return_dict=False)[1] - vanilla).abs().max().item() > 1e-4
    remove_repvideo(transformer)
    with torch.no_grad():
        assert torch.equal(transformer(**inputs, return_dict=False)[1], vanilla)


def test_the_token_refiner_is_not_gated():
    transformer, _ = TINY.build()
    assert get_transformer_blocks(transformer) == list(transformer.transformer_blocks)
    apply_repvideo(transformer, RepVideoConfig())
    assert all(not hasattr(block, "_diffusers_hook") for block in transformer.token_refiner.refiner_blocks)

"""Allegro: RepVideo on `AllegroTransformer3DModel` (video stream; text is a cross-attention condition)."""

import pytest
import torch

import family_checks as checks
from repvideo_diffusers import RepVideoConfig
from repvideo_diffusers.families import get_family_by_name

# Stated here, independently of the package: the blocks take and return the video stream alone.
BLOCK_LISTS = [("transformer_blocks", ("hidden_states",), None)]


@pytest.fixture
def tiny():
    return get_family_by_name("Allegro").tiny


def test_zero_gates_give_the_vanilla_output(tiny):
    checks.assert_zero_gates_give_the_vanilla_output(tiny)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(tiny, window):
    checks.assert_random_gates_match_the_official_loop(tiny, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise(tiny):
    checks.assert_remove_gives_the_original_bitwise(tiny)


def test_checkpointing_gives_the_same_loss_and_gradients(tiny):
    checks.assert_checkpointing_gives_the_same_loss_and_gradients(tiny)


def test_sdpa_routing_reproduces_the_stock_output_exactly(tiny):
    checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(tiny)


def test_capture_records_one_softmax_row_set_per_block(tiny):
    checks.assert_capture_records_one_softmax_row_set_per_block(tiny)


@pytest.mark.parametrize("guidance_scale", [1.0, 4.0])  # 4.0: classifier-free guidance, a batch of two prompts
def test_allegro_pipeline_end_to_end(guidance_scale):
    from tiny_pipelines_cogvideoxlike import allegro_call, allegro_pipeline

    pipe = allegro_pipeline()
    vanilla = allegro_call(pipe, guidance_scale=guidance_scale)
    pipe.enable_repvideo(RepVideoConfig(gate_init=0.0))
    assert torch.equal(allegro_call(pipe, guidance_scale=guidance_scale), vanilla)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert (allegro_call(pipe, guidance_scale=guidance_scale) - vanilla).abs().max().item() > 1e-4
    pipe.disable_repvideo()
    assert torch.equal(allegro_call(pipe, guidance_scale=guidance_scale), vanilla)

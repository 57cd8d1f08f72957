"""Cosmos: RepVideo on `CosmosTransformer3DModel` (video stream; text is a cross-attention condition)."""

import pytest
import torch

import family_checks as checks
from repvideo_diffusers import RepVideoConfig
from repvideo_diffusers.families import TinyModel, get_family_by_name
from repvideo_diffusers.families.cosmos import VARIANTS

# Stated here, independently of the package: the blocks take and return the video stream alone.
BLOCK_LISTS = [("transformer_blocks", ("hidden_states",), None)]

TINIES = {"Cosmos-1.0-Text2World": get_family_by_name("Cosmos").tiny, **VARIANTS}


@pytest.fixture
def tiny():
    return get_family_by_name("Cosmos").tiny


def test_zero_gates_give_the_vanilla_output(tiny):
    checks.assert_zero_gates_give_the_vanilla_output(tiny)


@pytest.mark.parametrize("variant", sorted(TINIES))
@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(variant, window):
    checks.assert_random_gates_match_the_official_loop(TINIES[variant], BLOCK_LISTS, window)


@pytest.mark.parametrize("variant", sorted(TINIES))
def test_remove_gives_the_original_bitwise(variant):
    checks.assert_remove_gives_the_original_bitwise(TINIES[variant])


def test_checkpointing_gives_the_same_loss_and_gradients(tiny):
    checks.assert_checkpointing_gives_the_same_loss_and_gradients(tiny)


def test_checkpointing_with_control_residuals_gives_the_same_loss_and_gradients():
    checks.assert_checkpointing_gives_the_same_loss_and_gradients(VARIANTS["Cosmos-2.5-Transfer"])


@pytest.mark.parametrize("variant", ["Cosmos-1.0-Text2World", "Cosmos-2.5-ImageContext"])  # both processor classes
def test_sdpa_routing_reproduces_the_stock_output_exactly(variant):
    checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(TINIES[variant])


@pytest.mark.parametrize("variant", ["Cosmos-1.0-Text2World", "Cosmos-2.5-ImageContext"])
def test_capture_records_one_softmax_row_set_per_block(variant):
    checks.assert_capture_records_one_softmax_row_set_per_block(TINIES[variant])


def test_the_released_padding_mask_layout_matches_the_official_loop():
    """Released checkpoints concatenate the padding mask, which diffusers resizes with torchvision."""
    pytest.importorskip("torchvision", reason="CosmosTransformer3DModel(concat_padding_mask=True) needs torchvision")
    base = TINIES["Cosmos-1.0-Text2World"]

    def make():  # the tiny recipe, with the padding-mask channel
        from diffusers import CosmosTransformer3DModel

        return CosmosTransformer3DModel.from_config({**base.make_transformer().config, "concat_padding_mask": True})

    checks.assert_random_gates_match_the_official_loop(TinyModel("Cosmos", make, base.make_inputs, 4), BLOCK_LISTS, 2)


def _assert_repvideo_end_to_end(kind, guidance_scale):
    from tiny_pipelines_cogvideoxlike import cosmos_call, cosmos_pipeline

    pipe = cosmos_pipeline(kind)
    vanilla = cosmos_call(pipe, guidance_scale=guidance_scale)
    pipe.enable_repvideo(RepVideoConfig(gate_init=0.0))
    assert torch.equal(cosmos_call(pipe, guidance_scale=guidance_scale), vanilla)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert (cosmos_call(pipe, guidance_scale=guidance_scale) - vanilla).abs().max().item() > 1e-4
    pipe.disable_repvideo()
    assert torch.equal(cosmos_call(pipe, guidance_scale=guidance_scale), vanilla)


@pytest.mark.parametrize("guidance_scale", [1.0, 7.0])  # 7.0: a second, unconditional transformer call per step
def test_cosmos_text2world_pipeline_end_to_end(guidance_scale):
    _assert_repvideo_end_to_end("text2world", guidance_scale)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["video2world", "2.0-video2world"])
def test_cosmos_video2world_pipelines_end_to_end(kind):
    """Predict 1.0 (Cosmos VAE, EDM) and Predict 2.0 (Wan VAE, flow matching, per-frame timesteps)."""
    _assert_repvideo_end_to_end(kind, 1.0)

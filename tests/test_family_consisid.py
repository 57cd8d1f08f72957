"""ConsisID: RepVideo on `ConsisIDTransformer3DModel` (joint video + text blocks, face adapter as a condition)."""

import pytest
import torch

import family_checks as checks
from repvideo_diffusers import RepVideoConfig
from repvideo_diffusers.families import get_family_by_name

# Stated here, independently of the package: the joint blocks take and return (video, text).
BLOCK_LISTS = [("transformer_blocks", ("hidden_states", "encoder_hidden_states"), (0, 1))]


@pytest.fixture
def tiny():
    return get_family_by_name("ConsisID").tiny


def test_the_tiny_model_runs_its_face_adapter(tiny):
    transformer, inputs = tiny.build()
    assert transformer.is_train_face and len(transformer.perceiver_cross_attention) == 2
    with_face = checks.run(transformer, inputs)
    transformer.local_face_scale = 0.0
    assert (checks.run(transformer, inputs) - with_face).abs().max().item() > 1e-4  # the identity really enters


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


def test_consisid_pipeline_end_to_end():
    pytest.importorskip("cv2", reason="diffusers' ConsisIDPipeline needs OpenCV (opencv-python) to import")
    from tiny_pipelines_cogvideoxlike import consisid_call, consisid_pipeline

    pipe = consisid_pipeline()
    vanilla = consisid_call(pipe)
    pipe.enable_repvideo(RepVideoConfig(gate_init=0.0))
    assert torch.equal(consisid_call(pipe), vanilla)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert (consisid_call(pipe) - vanilla).abs().max().item() > 1e-4
    pipe.disable_repvideo()
    assert torch.equal(consisid_call(pipe), vanilla)

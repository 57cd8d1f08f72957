"""RepVideo on HunyuanVideo 1.5 (`HunyuanVideo15Transformer3DModel`): the family properties of tests/family_checks.py,
and the text-to-video and image-to-video pipelines end to end (tiny, built in-process: tests/tiny_pipelines_hunyuan.py).
"""

import diffusers
import pytest
import torch

import family_checks as checks
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import get_family_by_name, get_transformer_blocks
from tiny_pipelines_hunyuan import check_repvideo_on_pipeline, hunyuan_video15_frames, hunyuan_video15_pipeline

if not hasattr(diffusers, "HunyuanVideo15Transformer3DModel"):
    pytest.skip("this diffusers has no HunyuanVideo15Transformer3DModel", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = get_family_by_name("HunyuanVideo-1.5").tiny
# Stated here, not read from the package: the dual-stream blocks take (video, text) and return (video, text); the
# token refiner's blocks run on the text alone before them and are not part of the sequence.
BLOCK_LISTS = [("transformer_blocks", ("hidden_states", "encoder_hidden_states"), (0, 1))]


def test_zero_gates_give_the_vanilla_output():
    checks.zero_gates_give_the_vanilla_output(TINY)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(window):
    checks.random_gates_match_the_official_loop(TINY, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    checks.remove_gives_the_original_bitwise(TINY)


def test_checkpointing_gives_the_same_loss_and_gradients():
    checks.checkpointing_gives_the_same_loss_and_gradients(TINY)


def test_sdpa_routing_reproduces_the_stock_output_exactly():
    checks.sdpa_routing_reproduces_the_stock_output_exactly(TINY)


def test_capture_records_one_softmax_row_set_per_block():
    checks.capture_records_one_softmax_row_set_per_block(TINY)


def test_the_token_refiner_is_not_gated():
    transformer, _ = TINY.build()
    refiner = list(transformer.context_embedder.token_refiner.refiner_blocks)
    assert refiner and get_transformer_blocks(transformer) == list(transformer.transformer_blocks)
    apply_repvideo(transformer, RepVideoConfig())
    assert all(not hasattr(block, "_diffusers_hook") for block in refiner)


# ----------------------------------------------------------------------------------------------------------------
# Pipelines end to end
# ----------------------------------------------------------------------------------------------------------------


def test_the_text_to_video_pipeline_end_to_end():
    pipe = hunyuan_video15_pipeline()
    check_repvideo_on_pipeline(pipe, hunyuan_video15_frames)


def test_the_image_to_video_pipeline_end_to_end():
    pipe = hunyuan_video15_pipeline(image_to_video=True)
    check_repvideo_on_pipeline(pipe, hunyuan_video15_frames)

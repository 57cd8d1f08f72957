"""Helios (`HeliosTransformer3DModel`): the family's properties on its tiny model (the pipelines' call: history context
+ current chunk), and `HeliosPipeline` / `HeliosPyramidPipeline` end to end.

The block lists are stated here, independently of the package: the ``blocks`` take and return one video stream, the
history tokens followed by the chunk's tokens; text is a cross-attention condition.
"""

import pytest
import torch

from tiny_pipelines_wanlike2 import require

require("HeliosTransformer3DModel", "HeliosPipeline", "HeliosPyramidPipeline")

import family_checks  # noqa: E402
from tiny_pipelines_wanlike2 import (  # noqa: E402
    assert_repvideo_round_trip,
    helios_frames,
    helios_pipeline,
    pil_image,
    pixel_video,
)

from repvideo_diffusers.attention import capture_attention  # noqa: E402
from repvideo_diffusers.families import get_family, get_family_by_name  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BLOCK_LISTS = [("blocks", ("hidden_states",), None)]
TINY = get_family_by_name("Helios").tiny
HISTORY_TOKENS = 1 + 4 + 32  # long (4 frames, 4x compressed), mid (2 frames, 2x compressed), short (2 frames)


def test_the_class_belongs_to_its_family():
    from diffusers import HeliosTransformer3DModel

    assert get_family(HeliosTransformer3DModel).name == "Helios"


def test_history_tokens_flow_through_the_blocks_with_the_chunk():
    """What makes them a stream, not a condition: every block takes and returns them, changed."""
    transformer, inputs = TINY.build()
    seen = []
    handles = [block.register_forward_hook(lambda m, a, out: seen.append((a[0], out))) for block in transformer.blocks]
    family_checks.run(transformer, inputs)
    for handle in handles:
        handle.remove()
    for block_input, block_output in seen:
        assert block_input.shape == block_output.shape == (2, HISTORY_TOKENS + 48, 16)
        assert (block_output[:, :HISTORY_TOKENS] - block_input[:, :HISTORY_TOKENS]).abs().max().item() > 1e-3


def test_zero_gates_give_the_vanilla_output():
    family_checks.assert_zero_gates_give_the_vanilla_output(TINY)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(window):
    family_checks.assert_random_gates_match_the_official_loop(TINY, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    family_checks.assert_remove_gives_the_original_bitwise(TINY)


def test_checkpointing_gives_the_same_loss_and_gradients():
    family_checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY)


def test_sdpa_routing_reproduces_the_stock_output_exactly():
    family_checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(TINY)


def test_capture_records_one_softmax_row_set_per_block():
    family_checks.assert_capture_records_one_softmax_row_set_per_block(TINY)


def test_capture_takes_the_frame_queries_from_the_chunk_after_the_history():
    transformer, inputs = TINY.build()
    with capture_attention(transformer) as capture:
        family_checks.run(transformer, inputs)
    assert capture.grid == (3, 4, 4)
    # the centre token (row 2, column 2 of 4 x 4) of each of the chunk's 3 frames, after the 37 history tokens
    assert capture.query_tokens.tolist() == [HISTORY_TOKENS + f * 16 + 10 for f in range(3)]
    assert [tuple(rows.shape) for rows in capture.maps] == [(2, 3, HISTORY_TOKENS + 48)] * 4


def test_text_to_video_pipeline():
    """Two chunks with classifier-free guidance: every transformer call carries the history context."""
    assert_repvideo_round_trip(helios_pipeline(), helios_frames)


def test_image_to_video_pipeline():
    image = pil_image(32)
    assert_repvideo_round_trip(helios_pipeline(), lambda pipe: helios_frames(pipe, image=image))


def test_video_to_video_pipeline():
    video = pixel_video(5, 32)
    assert_repvideo_round_trip(helios_pipeline(), lambda pipe: helios_frames(pipe, video=video))


def test_pyramid_pipeline():
    """Three resolution stages (64 x 64 frames: 2 x 2, 4 x 4 then 8 x 8 latents), one step each."""
    assert_repvideo_round_trip(helios_pipeline(pyramid=True),
                              lambda pipe: helios_frames(pipe, size=64, pyramid_num_inference_steps_list=[1, 1, 1]))


def test_gates_act_in_every_call_of_both_chunks():
    from repvideo_diffusers import RepVideoConfig

    pipe = helios_pipeline()
    pipe.enable_repvideo(RepVideoConfig(gate_init=0.5))
    state = pipe.transformer._repvideo_state.state
    counts = []
    handle = pipe.transformer.blocks[-1].register_forward_hook(lambda *a: counts.append(state.count))
    helios_frames(pipe)
    handle.remove()
    assert counts == [3] * 8  # 2 chunks x 2 steps x (conditional + unconditional call)
    assert torch.isfinite(pipe.transformer.repvideo_gates.gate).all()

"""ChronoEdit (`ChronoEditTransformer3DModel`): the family properties (tests/family_checks.py) and
`ChronoEditPipeline` end to end, with and without its temporal-reasoning frames."""

import pytest

import family_checks as checks
import tiny_pipelines_wanlike as pipelines
from repvideo_diffusers.families import get_family, get_family_by_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Stated here, not read from the package: the video stream flows through `blocks`; text and CLIP image tokens are
# cross-attention conditions.
BLOCK_LISTS = [("blocks", ("hidden_states",), None)]
TINY = get_family_by_name("ChronoEdit").tiny


def test_the_transformer_has_its_own_family_and_is_not_taken_for_wan():
    from diffusers import ChronoEditTransformer3DModel, WanTransformer3DModel

    assert not issubclass(ChronoEditTransformer3DModel, WanTransformer3DModel)
    assert get_family(ChronoEditTransformer3DModel).name == "ChronoEdit"


def test_zero_gates_give_the_vanilla_output():
    checks.assert_zero_gates_give_the_vanilla_output(TINY)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(window):
    checks.assert_random_gates_match_the_official_loop(TINY, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    checks.assert_remove_gives_the_original_bitwise(TINY)


def test_checkpointing_gives_the_same_loss_and_gradients():
    checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY)


def test_sdpa_routing_reproduces_the_stock_output_exactly():
    checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(TINY)


def test_capture_records_one_softmax_row_set_per_block():
    checks.assert_capture_records_one_softmax_row_set_per_block(TINY)


@pytest.mark.parametrize("temporal_reasoning", [False, True])
def test_pipeline_end_to_end(temporal_reasoning):
    # Without temporal reasoning the pipeline makes 2 latent frames (input image, edit); with it, 3 latent frames
    # for the first 2 steps, then the reasoning frame is dropped.
    overrides = dict(enable_temporal_reasoning=True, num_temporal_reasoning_steps=2, num_frames=9) \
        if temporal_reasoning else {}
    pipelines.assert_repvideo_round_trip(pipelines.chronoedit_pipeline(), **overrides)


def test_analyze_reports_every_block_of_every_step():
    pipelines.assert_analyze_reports(pipelines.chronoedit_pipeline())


@pytest.mark.slow
def test_repvideo_under_two_process_context_parallelism_on_cpu_equals_one_process(tmp_path):
    """ChronoEdit ships a context-parallel plan (video tokens split before `blocks.0`): each rank blends and caches
    its shard, and the output equals the single-process one (tests/test_context_parallel.py's worker)."""
    from test_context_parallel import _assert_equals_single_process, _run

    _assert_equals_single_process(_run("gloo", "ChronoEdit", tmp_path), ["ChronoEdit"], 2)

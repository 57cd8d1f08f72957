"""RepVideo on HunyuanVideo FramePack (`HunyuanVideoFramepackTransformer3DModel`): the family properties of
tests/family_checks.py, and the FramePack image-to-video pipeline end to end (both sampling types; tiny, built
in-process: tests/tiny_pipelines_hunyuan.py).
"""

import diffusers
import pytest

import family_checks as checks
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import get_family, get_family_by_name, get_transformer_blocks
from tiny_pipelines_hunyuan import assert_repvideo_on_pipeline, framepack_frames, framepack_pipeline

if not hasattr(diffusers, "HunyuanVideoFramepackTransformer3DModel"):
    pytest.skip("this diffusers has no HunyuanVideoFramepackTransformer3DModel", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = get_family_by_name("HunyuanVideo-FramePack").tiny
# Stated here, not read from the package: double- then single-stream blocks, one sequence; both take and return
# (video, text), the video stream being the history tokens followed by the noisy section's tokens.
JOINT = ("hidden_states", "encoder_hidden_states")
BLOCK_LISTS = [("transformer_blocks", JOINT, (0, 1)), ("single_transformer_blocks", JOINT, (0, 1))]


def test_zero_gates_give_the_vanilla_output():
    checks.assert_zero_gates_give_the_vanilla_output(TINY)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(window):
    checks.assert_random_gates_match_the_official_loop(TINY, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    checks.assert_remove_gives_the_original_bitwise(TINY)


def test_checkpointing_gives_the_same_loss_and_gradients():
    checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY)


def test_it_is_a_family_of_its_own_not_hunyuan_video():
    """FramePack's transformer is no subclass of HunyuanVideo's (it reuses only its block classes)."""
    from diffusers import HunyuanVideoFramepackTransformer3DModel, HunyuanVideoTransformer3DModel

    assert not issubclass(HunyuanVideoFramepackTransformer3DModel, HunyuanVideoTransformer3DModel)
    assert get_family(HunyuanVideoFramepackTransformer3DModel).name == "HunyuanVideo-FramePack"
    assert get_family(HunyuanVideoTransformer3DModel).name == "HunyuanVideo"


def test_the_token_refiner_is_not_gated_and_the_history_tokens_are_blended():
    transformer, inputs = TINY.build()
    assert get_transformer_blocks(transformer) == [*transformer.transformer_blocks,
                                                   *transformer.single_transformer_blocks]
    seen = []
    handle = transformer.transformer_blocks[1].register_forward_pre_hook(
        lambda module, args: seen.append(args[0].shape[1]))
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.5))
    checks.run(transformer, inputs)
    handle.remove()
    # 1x history (2 frames of 4 x 4 tokens) + 2x (1 x 2 x 2) + 4x (1 x 1 x 1) + noisy section (3 x 4 x 4) tokens,
    # the whole video stream: the blend covers the history too.
    assert seen == [2 * 16 + 4 + 1 + 3 * 16]
    refiner = transformer.context_embedder.token_refiner.refiner_blocks
    assert all(not hasattr(block, "_diffusers_hook") for block in refiner)


# ----------------------------------------------------------------------------------------------------------------
# The pipeline end to end
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampling", ["INVERTED_ANTI_DRIFTING", "VANILLA"])
def test_the_framepack_pipeline_end_to_end(sampling):
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import FramepackSamplingType

    sampling_type = getattr(FramepackSamplingType, sampling)
    assert_repvideo_on_pipeline(framepack_pipeline(),
                               lambda pipe: framepack_frames(pipe, sampling_type=sampling_type), num_blocks=5)


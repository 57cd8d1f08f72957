"""Sana-Video (`SanaVideoTransformer3DModel`): the family's properties on its tiny model, and `SanaVideoPipeline` /
`SanaImageToVideoPipeline` end to end (tiny Gemma 2 text encoder from a random config).

The block lists are stated here, independently of the package: the ``transformer_blocks`` take and return the video
stream alone; the text reaches every block through cross-attention (with its padding mask) and is never blended.
"""

import pytest

from tiny_pipelines_wanlike2 import require

require("SanaVideoTransformer3DModel", "SanaVideoPipeline", "SanaImageToVideoPipeline")

import family_checks  # noqa: E402
from tiny_pipelines_wanlike2 import (  # noqa: E402
    assert_repvideo_round_trip,
    pil_image,
    sana_video_frames,
    sana_video_pipeline,
)

from repvideo_diffusers.attention import capture_attention  # noqa: E402
from repvideo_diffusers.families import get_family, get_family_by_name  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BLOCK_LISTS = [("transformer_blocks", ("hidden_states",), None)]
TINY = get_family_by_name("Sana-Video").tiny


def test_the_class_belongs_to_its_family():
    from diffusers import SanaVideoTransformer3DModel

    assert get_family(SanaVideoTransformer3DModel).name == "Sana-Video"


def test_zero_gates_give_the_vanilla_output():
    family_checks.assert_zero_gates_give_the_vanilla_output(TINY)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(window):
    family_checks.assert_random_gates_match_the_official_loop(TINY, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    family_checks.assert_remove_gives_the_original_bitwise(TINY)


def test_checkpointing_gives_the_same_loss_and_gradients():
    family_checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY)


def test_padded_text_is_masked_with_and_without_repvideo():
    """Changing the embeddings of sample 0's padded text tokens changes nothing, gated or not."""
    from repvideo_diffusers import RepVideoConfig, apply_repvideo

    transformer, inputs = TINY.build()
    apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.6))
    before = family_checks.run(transformer, inputs)
    inputs["encoder_hidden_states"][0, 9:] += 5.0
    assert (family_checks.run(transformer, inputs)[0] - before[0]).abs().max().item() <= 1e-5


def test_linear_self_attention_has_no_attention_facts():
    transformer, _ = TINY.build()
    assert get_family(transformer).attention is None
    with pytest.raises(ValueError, match="declares no attention facts"):
        with capture_attention(transformer):
            pass


def test_text_to_video_pipeline():
    assert_repvideo_round_trip(sana_video_pipeline(), sana_video_frames)


def test_image_to_video_pipeline():
    image = pil_image(32)
    assert_repvideo_round_trip(sana_video_pipeline(image_to_video=True),
                              lambda pipe: sana_video_frames(pipe, image=image))

"""Cosmos 3 Omni (`Cosmos3OmniTransformer`): the family's properties on its tiny configuration, with the video
alone and with sound tokens in the generation stream (the outputs of every generated modality are compared), and
`Cosmos3OmniPipeline` (text-to-video, image-to-video) end to end."""

import numpy as np
import pytest
import torch

import family_checks
from reference_loop import official_output
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import TinyModel, cosmos3, get_family_by_name

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Stated here, not read from the package: each layer takes (und_seq, gen_seq) and returns them in that order; the
# generation stream (video first) is the first stream.
BLOCK_LISTS = [("layers", ("gen_seq", "und_seq"), (1, 0))]


def _joined_outputs(tiny: TinyModel) -> TinyModel:
    """The tiny model, whose ``return_dict=False`` output is ``(every prediction flattened and joined,)``.

    `Cosmos3OmniTransformer` returns per-modality lists (video, sound, action); the shared checks compare
    ``output[0]``, so through this subclass (same weights, same family) they compare every prediction.
    """
    from diffusers import Cosmos3OmniTransformer

    class JoinedOutputs(Cosmos3OmniTransformer):
        def forward(self, *args, return_dict: bool = True, **kwargs):
            out = super().forward(*args, return_dict=True, **kwargs)
            if return_dict:
                return out
            parts = [*out.sample, *(out.sound or []), *(out.action or [])]
            return (torch.cat([part.flatten() for part in parts]),)

    def make():
        transformer = tiny.make_transformer()
        transformer.__class__ = JoinedOutputs
        return transformer

    return TinyModel(tiny.family, make, tiny.make_inputs, tiny.num_blocks)


FAMILY = get_family_by_name("Cosmos3")
WITH_SOUND = TinyModel("Cosmos3", cosmos3._tiny_transformer(sound_gen=True, sound_dim=4),
                       cosmos3._tiny_inputs(sound_frames=6), 4)
TINY = {"video": _joined_outputs(FAMILY.tiny), "video+sound": _joined_outputs(WITH_SOUND)}


@pytest.mark.parametrize("variant", sorted(TINY))
def test_zero_gates_give_the_vanilla_output(variant):
    family_checks.assert_zero_gates_give_the_vanilla_output(TINY[variant])


@pytest.mark.parametrize("variant", sorted(TINY))
@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(variant, window):
    family_checks.assert_random_gates_match_the_official_loop(TINY[variant], BLOCK_LISTS, window)


def test_the_text_stream_is_blended_too():
    """Blending the generation stream alone gives another output: the text pathway really goes through the cache."""
    transformer, inputs = TINY["video"].build()
    gate_values = torch.linspace(0.2, 0.8, 4)
    generation_only = official_output(transformer, inputs, gate_values, 2, [("layers", ("gen_seq",), (1,))])
    both = official_output(transformer, inputs, gate_values, 2, BLOCK_LISTS)
    gates = apply_repvideo(transformer, RepVideoConfig(window=2))
    with torch.no_grad():
        gates.gate.copy_(gate_values)
    actual = family_checks.run(transformer, inputs)
    assert (actual - both).abs().max().item() <= 1e-5
    assert (actual - generation_only).abs().max().item() > 1e-4


def test_remove_gives_the_original_bitwise():
    family_checks.assert_remove_gives_the_original_bitwise(TINY["video"])


@pytest.mark.parametrize("config", sorted(TINY))
def test_checkpointing_gives_the_same_loss_and_gradients(config):
    # Cosmos 3 checkpoints `decoder_layer.__call__` (a bound method): the wrapper finds the layer behind it.
    family_checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY[config])


# --- pipeline end to end ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pipe():
    from tiny_pipelines_kandinsky import cosmos3_pipeline

    return cosmos3_pipeline()


def test_pipeline_zero_gates_change_nothing_and_disable_restores_bitwise(pipe):
    from tiny_pipelines_kandinsky import cosmos3_video

    vanilla = cosmos3_video(pipe)
    assert vanilla.shape == (1, 16, 3, 8, 8) and np.isfinite(vanilla).all()
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert np.array_equal(cosmos3_video(pipe), vanilla)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert pipe.transformer.repvideo_gates.gate.shape == (4,)
    assert np.abs(cosmos3_video(pipe) - vanilla).max() > 1e-3
    pipe.disable_repvideo()
    assert np.array_equal(cosmos3_video(pipe), vanilla)


def test_pipeline_image_to_video_with_guidance_decodes_a_video(pipe):
    from PIL import Image

    from tiny_pipelines_kandinsky import cosmos3_video

    image = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    try:
        video = cosmos3_video(pipe, image=image, guidance_scale=6.0, output_type="np")
    finally:
        pipe.disable_repvideo()
    assert video.shape == (9, 64, 64, 3) and np.isfinite(video).all()  # the pipeline runs one sample per call

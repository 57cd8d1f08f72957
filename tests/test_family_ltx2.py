"""LTX-2 (`LTX2VideoTransformer3DModel`, audio-video): the family's properties on its tiny configurations, comparing
the video AND the audio output, and the text-to-video and image-to-video pipelines end to end with a tiny random
Gemma 3 text encoder, audio VAE and vocoder."""

import numpy as np
import pytest
import torch

import family_checks
from reference_loop import official_output
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import TinyModel, get_family_by_name, ltx2
from tiny_pipelines_kandinsky import ltx2_outputs, ltx2_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Stated here, not read from the package: the audio-visual blocks carry the video stream and the audio stream, and
# return both, in this order.
BLOCK_LISTS = [("transformer_blocks", ("hidden_states", "audio_hidden_states"), (0, 1))]
VIDEO_TOKENS, AUDIO_FRAMES, CHANNELS = 48, 10, 4


def _both_outputs(tiny: TinyModel) -> TinyModel:
    """The tiny model, whose ``return_dict=False`` output is ``(video and audio outputs, flattened and joined,)``.

    The shared checks compare ``output[0]``, which for LTX-2 is the video alone; through this subclass (same weights,
    same family) every check compares the audio output too.
    """
    from diffusers import LTX2VideoTransformer3DModel

    class BothOutputs(LTX2VideoTransformer3DModel):
        def forward(self, *args, return_dict: bool = True, **kwargs):
            out = super().forward(*args, return_dict=True, **kwargs)
            if return_dict:
                return out
            return (torch.cat([out.sample.flatten(1), out.audio_sample.flatten(1)], dim=1),)

    def make():
        transformer = tiny.make_transformer()
        transformer.__class__ = BothOutputs
        return transformer

    return TinyModel(tiny.family, make, tiny.make_inputs, tiny.num_blocks)


def _split(joined):
    video = joined[:, : VIDEO_TOKENS * CHANNELS]
    audio = joined[:, VIDEO_TOKENS * CHANNELS:]
    assert audio.shape[1] == AUDIO_FRAMES * CHANNELS
    return video, audio


FAMILY = get_family_by_name("LTX-2")
LTX23 = TinyModel("LTX-2", ltx2._tiny_transformer(**ltx2.LTX23_CONFIG),
                  ltx2._tiny_inputs(text_width=16, audio_text_width=8, ltx23=True), 4)
TINY = {"LTX-2": _both_outputs(FAMILY.tiny), "LTX-2.3": _both_outputs(LTX23)}


@pytest.mark.parametrize("variant", sorted(TINY))
def test_zero_gates_give_the_vanilla_output(variant):
    family_checks.assert_zero_gates_give_the_vanilla_output(TINY[variant])


@pytest.mark.parametrize("variant", sorted(TINY))
@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(variant, window):
    family_checks.assert_random_gates_match_the_official_loop(TINY[variant], BLOCK_LISTS, window)


def test_the_audio_stream_is_blended_and_both_outputs_change():
    """The reference that blends the video stream alone differs from the package in the audio output (and in the
    video, through the video-to-audio exchange): the audio stream really goes through the cache."""
    transformer, inputs = TINY["LTX-2"].build()
    vanilla = family_checks.run(transformer, inputs)
    gate_values = torch.linspace(0.2, 0.8, 4)
    video_only = official_output(transformer, inputs, gate_values, 2, [("transformer_blocks", ("hidden_states",), None)])
    both = official_output(transformer, inputs, gate_values, 2, BLOCK_LISTS)
    gates = apply_repvideo(transformer, RepVideoConfig(window=2))
    with torch.no_grad():
        gates.gate.copy_(gate_values)
    actual = family_checks.run(transformer, inputs)
    for part_actual, part_both, part_video_only, part_vanilla in zip(*map(_split, (actual, both, video_only, vanilla))):
        assert (part_actual - part_both).abs().max().item() <= 1e-5
        assert (part_actual - part_video_only).abs().max().item() > 1e-4
        assert (part_actual - part_vanilla).abs().max().item() > 1e-4


def test_remove_gives_the_original_bitwise():
    family_checks.assert_remove_gives_the_original_bitwise(TINY["LTX-2"])


@pytest.mark.parametrize("variant", sorted(TINY))
def test_checkpointing_gives_the_same_loss_and_gradients(variant):
    family_checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY[variant])


@pytest.mark.parametrize("variant", sorted(TINY))
def test_sdpa_routing_reproduces_the_stock_output_exactly(variant):
    family_checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(TINY[variant])


@pytest.mark.parametrize("variant", sorted(TINY))
def test_capture_records_one_softmax_row_set_per_block(variant):
    family_checks.assert_capture_records_one_softmax_row_set_per_block(TINY[variant])


def test_capture_covers_the_video_self_attention_only():
    from repvideo_diffusers.attention import capture_attention

    transformer, inputs = TINY["LTX-2"].build()
    with capture_attention(transformer) as capture:
        family_checks.run(transformer, inputs)
    assert capture.grid == (3, 4, 4)
    assert capture.layers == [f"transformer_blocks.{i}.attn1" for i in range(4)]
    assert [tuple(rows.shape) for rows in capture.maps] == [(2, 3, VIDEO_TOKENS)] * 4


# --- pipelines end to end -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def t2v():
    return ltx2_pipeline()


def test_t2v_pipeline_zero_gates_change_nothing_and_disable_restores_bitwise(t2v):
    video, audio = ltx2_outputs(t2v)
    assert video.shape == (1, 4, 3, 16, 16) and audio.shape == (1, 2, 5, 2)
    t2v.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert all(np.array_equal(a, b) for a, b in zip(ltx2_outputs(t2v), (video, audio)))
    t2v.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert t2v.transformer.repvideo_gates.gate.shape == (3,)
    gated_video, gated_audio = ltx2_outputs(t2v)
    assert np.abs(gated_video - video).max() > 1e-3 and np.abs(gated_audio - audio).max() > 1e-3
    t2v.disable_repvideo()
    assert all(np.array_equal(a, b) for a, b in zip(ltx2_outputs(t2v), (video, audio)))


def test_t2v_pipeline_default_guidance_decodes_video_and_audio(t2v):
    """The pipeline's default sampling (CFG, modality isolation, rescale, and the STG call, whose block 28 the
    3-block tiny model does not have: three transformer calls per step) and both decoders, with gates on."""
    t2v.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    try:
        video, audio = ltx2_outputs(t2v, output_type="np", plain=False)
    finally:
        t2v.disable_repvideo()
    assert video.shape == (1, 5, 32, 32, 3) and np.isfinite(video).all()
    assert audio.shape[:2] == (1, 2) and np.isfinite(audio).all()


def test_i2v_pipeline_zero_gates_change_nothing_and_disable_restores_bitwise():
    from PIL import Image

    pipe = ltx2_pipeline(image_to_video=True)
    image = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype("uint8"))
    call = dict(image=image, image_crf=0)  # CRF 0: no H.264 re-compression of the image (that needs PyAV)
    video, audio = ltx2_outputs(pipe, **call)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert all(np.array_equal(a, b) for a, b in zip(ltx2_outputs(pipe, **call), (video, audio)))
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    gated_video, gated_audio = ltx2_outputs(pipe, **call)
    assert np.abs(gated_video - video).max() > 1e-3 and np.abs(gated_audio - audio).max() > 1e-3
    pipe.disable_repvideo()
    assert all(np.array_equal(a, b) for a, b in zip(ltx2_outputs(pipe, **call), (video, audio)))


@pytest.mark.slow
def test_repvideo_generate_runs_a_saved_ltx2_pipeline_with_its_saved_gates(tmp_path):
    """`repvideo generate --model <folder>`: the gates saved beside the transformer are used (the mp4 differs from
    --no-repvideo); the video is written, the audio track is not."""
    from repvideo_diffusers.cli import main
    from repvideo_diffusers.utils.video import read_video

    pipe = ltx2_pipeline()
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    pipe.save_pretrained(tmp_path / "pipe")
    assert (tmp_path / "pipe" / "repvideo" / "config.json").is_file()
    common = ["--model", str(tmp_path / "pipe"), "--steps", "2", "--frames", "9", "--height", "32", "--width", "32"]
    assert main(["generate", "a fox in snow", *common, "--out", str(tmp_path / "gated.mp4")]) == 0
    assert main(["generate", "a fox in snow", *common, "--no-repvideo", "--out", str(tmp_path / "plain.mp4")]) == 0
    gated, plain = read_video(tmp_path / "gated.mp4")[0], read_video(tmp_path / "plain.mp4")[0]
    assert gated.shape == plain.shape == (9, 32, 32, 3)
    assert np.abs(gated.astype(int) - plain.astype(int)).max() > 0


def test_analyze_with_the_default_guidance_reports_every_block_for_both_runs(t2v):
    from repvideo_diffusers.analysis import analyze

    report = analyze(t2v, "a fox in snow", num_inference_steps=2, gates=RepVideoConfig(window=2, gate_init=0.5),
                     progress=False, height=32, width=32, num_frames=5, frame_rate=25.0, max_sequence_length=16)
    for run in report["runs"].values():
        assert np.array(run["attention_similarity"]).shape == (2, 3, 3)
        assert np.array(run["frame_similarity"]).shape == (2, 3)
        assert run["grid"] == [3, 16, 16]
    assert not hasattr(t2v.transformer, "repvideo_gates")

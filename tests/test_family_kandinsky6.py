"""Kandinsky 6 (`Kandinsky6Transformer3DModel`, video and audio): the family's properties on its tiny configuration,
with audio (comparing the video AND the audio output) and without (video only), and `Kandinsky6TI2VAPipeline` end to
end (text-to-video-and-audio, text-to-video, image-to-video-and-audio) with tiny random Qwen2.5-VL and CLIP text
encoders, video VAE, audio VAE and vocoder."""

import numpy as np
import pytest
import torch

import family_checks
from reference_loop import official_output
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import TinyModel, get_family_by_name, get_transformer_blocks, kandinsky6
from tiny_pipelines_kandinsky6 import kandinsky6_outputs, kandinsky6_pipeline, qwen_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Stated here, not read from the package: the fused blocks carry the video stream and the audio stream and return
# both, in this order; the text blocks before them refine the text, a condition of every fused block. Without audio
# the blocks pass `aud=None` on, so only the video stream flows.
BLOCK_LISTS = [("visual_transformer_blocks", ("vis", "aud"), (0, 1))]
VIDEO_ONLY_BLOCK_LISTS = [("visual_transformer_blocks", ("vis",), (0,))]
VIDEO_SIZE, AUDIO_SIZE = 3 * 8 * 8 * 4, 10 * 4  # per sample: (frames, height, width, channels), (frames, channels)


def _both_outputs(tiny: TinyModel) -> TinyModel:
    """The tiny model, whose ``return_dict=False`` output is ``(video and audio outputs, flattened and joined,)``.

    The shared checks compare ``output[0]``, which for Kandinsky 6 is the video alone; through this subclass (same
    weights, same family) every check compares the audio output too. Without audio the output is the video alone.
    """
    from diffusers import Kandinsky6Transformer3DModel

    class BothOutputs(Kandinsky6Transformer3DModel):
        def forward(self, *args, return_dict: bool = True, **kwargs):
            out = super().forward(*args, return_dict=True, **kwargs)
            if return_dict:
                return out
            if out.audio_sample is None:
                return (out.sample,)
            return (torch.cat([out.sample.flatten(1), out.audio_sample.flatten(1)], dim=1),)

    def make():
        transformer = tiny.make_transformer()
        transformer.__class__ = BothOutputs
        return transformer

    return TinyModel(tiny.family, make, tiny.make_inputs, tiny.num_blocks)


def _split(joined):
    assert joined.shape[1] == VIDEO_SIZE + AUDIO_SIZE
    return joined[:, :VIDEO_SIZE], joined[:, VIDEO_SIZE:]


FAMILY = get_family_by_name("Kandinsky6")
# The architecture the diffusers defaults describe (no cross-modal rope or gates, the original modulation, no token
# types, no condition channels): the fused block takes other branches.
BASE_FLAGS = dict(text_token_padding=False, ca_rope=False, cross_gates=False, fix_modulation=False,
                  visual_cond=False, visual_token_type_num_embeddings=0)
TINY = {
    "audio": _both_outputs(FAMILY.tiny),
    "video only": _both_outputs(TinyModel("Kandinsky6", kandinsky6._tiny_transformer(),
                                          kandinsky6._tiny_inputs(audio=False), 4)),
    "audio, base flags": _both_outputs(TinyModel("Kandinsky6", kandinsky6._tiny_transformer(**BASE_FLAGS),
                                                 kandinsky6._tiny_inputs(visual_cond=False), 4)),
}
REFERENCE = {"audio": BLOCK_LISTS, "video only": VIDEO_ONLY_BLOCK_LISTS, "audio, base flags": BLOCK_LISTS}


def test_the_gated_blocks_are_the_fused_blocks_and_the_text_blocks_are_not_gated():
    transformer, _ = TINY["audio"].build()
    assert get_transformer_blocks(transformer) == list(transformer.visual_transformer_blocks)
    assert len(transformer.video_text_transformer_blocks) == len(transformer.audio_text_transformer_blocks) == 1


def test_the_tiny_blocks_are_not_the_identity_for_either_stream():
    transformer, inputs = TINY["audio"].build()
    outputs = []
    handles = [block.register_forward_hook(lambda m, a, o: outputs.append(o))
               for block in transformer.visual_transformer_blocks]
    family_checks.run(transformer, inputs)
    for handle in handles:
        handle.remove()
    for before, after in zip(outputs, outputs[1:]):
        assert all((b - a).abs().mean() > 0.1 * b.abs().mean() for a, b in zip(before, after))


@pytest.mark.parametrize("variant", ["audio", "video only"])
def test_zero_gates_give_the_vanilla_output(variant):
    family_checks.assert_zero_gates_give_the_vanilla_output(TINY[variant])


@pytest.mark.parametrize("variant", sorted(TINY))
@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(variant, window):
    family_checks.assert_random_gates_match_the_official_loop(TINY[variant], REFERENCE[variant], window)


def test_the_audio_stream_is_blended_and_both_outputs_change():
    """The reference that blends the video stream alone differs from the package in the audio output (and in the
    video, through the audio-to-video exchange): the audio stream really goes through the cache."""
    transformer, inputs = TINY["audio"].build()
    vanilla = family_checks.run(transformer, inputs)
    gate_values = torch.linspace(0.2, 0.8, 4)
    video_only = official_output(transformer, inputs, gate_values, 2, VIDEO_ONLY_BLOCK_LISTS)
    both = official_output(transformer, inputs, gate_values, 2, BLOCK_LISTS)
    gates = apply_repvideo(transformer, RepVideoConfig(window=2))
    with torch.no_grad():
        gates.gate.copy_(gate_values)
    actual = family_checks.run(transformer, inputs)
    for part_actual, part_both, part_video_only, part_vanilla in zip(*map(_split, (actual, both, video_only, vanilla))):
        assert (part_actual - part_both).abs().max().item() <= 1e-5
        assert (part_actual - part_video_only).abs().max().item() > 1e-4
        assert (part_actual - part_vanilla).abs().max().item() > 1e-4


def test_a_video_only_call_after_an_audio_call_blends_the_video_alone():
    """One gated transformer serves calls with and without audio (the pipeline's ``sample_audio``): each call
    matches its own reference."""
    transformer, inputs = TINY["audio"].build()
    video_inputs = {k: v for k, v in inputs.items() if k != "audio_hidden_states"}
    gate_values = torch.linspace(0.2, 0.8, 4)
    expected = [official_output(transformer, inputs, gate_values, 2, BLOCK_LISTS),
                official_output(transformer, video_inputs, gate_values, 2, VIDEO_ONLY_BLOCK_LISTS)]
    gates = apply_repvideo(transformer, RepVideoConfig(window=2))
    with torch.no_grad():
        gates.gate.copy_(gate_values)
    for _ in range(2):
        for call_inputs, reference in zip((inputs, video_inputs), expected):
            assert (family_checks.run(transformer, call_inputs) - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("variant", ["audio", "video only"])
def test_remove_gives_the_original_bitwise(variant):
    family_checks.assert_remove_gives_the_original_bitwise(TINY[variant])


@pytest.mark.parametrize("variant", ["audio", "video only"])
def test_checkpointing_gives_the_same_loss_and_gradients(variant):
    family_checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY[variant])


def test_the_captured_attention_is_the_nested_video_self_attention_and_every_processor_is_known():
    """Every attention runs `Kandinsky6AttnProcessor` (SDPA through diffusers' native backend); the video
    self-attention of a fused block is ``video_dec_block.self_attention``, one level down."""
    from diffusers.models.transformers.transformer_kandinsky6 import Kandinsky6Attention, Kandinsky6AttnProcessor

    transformer, _ = TINY["audio"].build()
    assert FAMILY.attention.captured == "video_dec_block.self_attention"
    block = transformer.visual_transformer_blocks[0]
    assert not hasattr(block, "self_attention")
    assert isinstance(block.get_submodule(FAMILY.attention.captured), Kandinsky6Attention)
    assert {type(m.processor) for m in transformer.modules() if isinstance(m, Kandinsky6Attention)} == {
        Kandinsky6AttnProcessor}
    assert FAMILY.attention.processors == ("Kandinsky6AttnProcessor",)


# --- pipelines end to end -----------------------------------------------------------------------------------------


def test_the_tiny_qwen_tokenizer_puts_the_prompt_right_after_the_pipelines_crop():
    from diffusers.pipelines.kandinsky6.pipeline_kandinsky6_ti2va import _PROMPT_TEMPLATE, _QWEN_CROP_START

    tokenizer = qwen_tokenizer()
    ids = tokenizer(_PROMPT_TEMPLATE.format("a fox in snow")).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert "<unk>" not in tokens
    assert tokens[_QWEN_CROP_START:] == ["a", " fox", " in", " snow", "<|im_end|>"]


@pytest.fixture(scope="module")
def pipe():
    return kandinsky6_pipeline()


def _same(a, b) -> bool:
    return all((x is None and y is None) or np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("sample_audio", [True, False], ids=["video and audio", "video only"])
def test_t2v_pipeline_zero_gates_change_nothing_and_disable_restores_bitwise(pipe, sample_audio):
    video, audio = kandinsky6_outputs(pipe, sample_audio=sample_audio)
    assert video.shape == (1, 4, 3, 8, 8) and np.isfinite(video).all()
    assert audio.shape == (1, 4, 10) if sample_audio else audio is None
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert _same(kandinsky6_outputs(pipe, sample_audio=sample_audio), (video, audio))
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert pipe.transformer.repvideo_gates.gate.shape == (4,)
    gated_video, gated_audio = kandinsky6_outputs(pipe, sample_audio=sample_audio)
    assert np.abs(gated_video - video).max() > 1e-3
    if sample_audio:
        assert np.abs(gated_audio - audio).max() > 1e-3
    pipe.disable_repvideo()
    assert _same(kandinsky6_outputs(pipe, sample_audio=sample_audio), (video, audio))


def test_t2v_pipeline_with_guidance_decodes_video_and_audio(pipe):
    """Classifier-free guidance with a padded negative prompt (two transformer calls per step), the video VAE, the
    audio VAE and the vocoder, with gates on."""
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    try:
        video, audio = kandinsky6_outputs(pipe, output_type="np", guidance_scale=5.0, negative_prompt="red ball")
    finally:
        pipe.disable_repvideo()
    assert video.shape == (1, 9, 64, 64, 3) and np.isfinite(video).all()
    assert audio.shape == (1, 10 * 32) and np.isfinite(audio).all()


def test_i2v_pipeline_zero_gates_change_nothing_and_disable_restores_bitwise(pipe):
    """Image conditioning: the reference frame is appended as a fourth latent frame (token type 1, rotary position
    0), inside the video stream."""
    from PIL import Image

    image = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))
    video, audio = kandinsky6_outputs(pipe, image=image)
    assert video.shape == (1, 4, 3, 8, 8) and np.isfinite(video).all()
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert _same(kandinsky6_outputs(pipe, image=image), (video, audio))
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    gated_video, gated_audio = kandinsky6_outputs(pipe, image=image)
    assert np.abs(gated_video - video).max() > 1e-3 and np.abs(gated_audio - audio).max() > 1e-3
    pipe.disable_repvideo()
    assert _same(kandinsky6_outputs(pipe, image=image), (video, audio))


def test_generate_videos_writes_the_video_of_the_pipeline(pipe, tmp_path):
    """What `repvideo generate` runs once the pipeline is loaded: the mp4 with gates differs from the one without
    (the audio is sampled and not written)."""
    from repvideo_diffusers.generation import generate_videos, video_jobs
    from repvideo_diffusers.utils.video import read_video

    call = dict(num_inference_steps=2, guidance_scale=1.0, num_frames=9, height=64, width=64, max_sequence_length=16)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    try:
        generate_videos(pipe, video_jobs("a fox in snow", out=tmp_path / "gated.mp4"), call, device="cpu")
    finally:
        pipe.disable_repvideo()
    generate_videos(pipe, video_jobs("a fox in snow", out=tmp_path / "plain.mp4"), call, device="cpu",
                    repvideo=False)
    gated, plain = read_video(tmp_path / "gated.mp4")[0], read_video(tmp_path / "plain.mp4")[0]
    assert gated.shape == plain.shape == (9, 64, 64, 3)
    assert np.abs(gated.astype(int) - plain.astype(int)).max() > 0


@pytest.mark.parametrize("tiny", [_both_outputs(FAMILY.tiny), FAMILY.tiny], ids=["video+audio", "video output"])
def test_sdpa_routing_reproduces_the_stock_output_exactly(tiny):
    family_checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(tiny)


def test_capture_records_one_softmax_row_set_per_block_of_the_video_self_attention():
    family_checks.assert_capture_records_one_softmax_row_set_per_block(FAMILY.tiny)

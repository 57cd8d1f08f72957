"""Kandinsky 5 (`Kandinsky5Transformer3DModel`): the family's properties on its tiny configuration, and the T2V and
I2V pipelines end to end with tiny random Qwen2.5-VL and CLIP text encoders."""

import numpy as np
import pytest
import torch

import family_checks
from repvideo_diffusers import RepVideoConfig
from repvideo_diffusers.families import TinyModel, get_family_by_name, kandinsky5
from tiny_pipelines_kandinsky import kandinsky5_frames, kandinsky5_pipeline, qwen_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Stated here, not read from the package: the visual (decoder) blocks, whose video stream is `visual_embed`; the
# text blocks before them refine the text, a condition of every visual block.
BLOCK_LISTS = [("visual_transformer_blocks", ("visual_embed",), None)]


def _tuple_output(tiny: TinyModel) -> TinyModel:
    """The tiny model, returning ``(sample,)`` with ``return_dict=False`` as other diffusers transformers do.

    `Kandinsky5Transformer3DModel` returns the bare tensor, so ``output[0]`` (what the shared checks compare) would
    be the first sample only; this subclass (same weights, same family) makes the checks compare the whole batch.
    """
    from diffusers import Kandinsky5Transformer3DModel

    class TupleOutput(Kandinsky5Transformer3DModel):
        def forward(self, *args, return_dict: bool = True, **kwargs):
            out = super().forward(*args, return_dict=True, **kwargs)
            return out if return_dict else (out.sample,)

    def make():
        transformer = tiny.make_transformer()
        transformer.__class__ = TupleOutput
        return transformer

    return TinyModel(tiny.family, make, tiny.make_inputs, tiny.num_blocks)


FAMILY = get_family_by_name("Kandinsky5")
# The image-to-video configuration: first-frame latent and mask as extra input channels (2 x 4 + 1).
I2V = TinyModel("Kandinsky5", kandinsky5._tiny_transformer(visual_cond=True), kandinsky5._tiny_inputs(9), 4)
TINY = {"T2V": _tuple_output(FAMILY.tiny), "I2V": _tuple_output(I2V)}


def test_the_gated_blocks_are_the_visual_blocks_and_the_text_blocks_are_not_gated():
    from repvideo_diffusers.families import get_transformer_blocks

    transformer, _ = TINY["T2V"].build()
    assert get_transformer_blocks(transformer) == list(transformer.visual_transformer_blocks)
    assert len(transformer.text_transformer_blocks) == 1


def test_the_tiny_blocks_are_not_the_identity():
    """Kandinsky zero-initialises its modulations (every block the identity); the tiny model randomises them."""
    transformer, inputs = TINY["T2V"].build()
    outputs = []
    handles = [block.register_forward_hook(lambda m, a, o: outputs.append(o))
               for block in transformer.visual_transformer_blocks]
    family_checks.run(transformer, inputs)
    for handle in handles:
        handle.remove()
    assert all((b - a).abs().mean() > 0.1 * b.abs().mean() for a, b in zip(outputs, outputs[1:]))


@pytest.mark.parametrize("variant", sorted(TINY))
def test_zero_gates_give_the_vanilla_output(variant):
    family_checks.assert_zero_gates_give_the_vanilla_output(TINY[variant])


@pytest.mark.parametrize("variant", sorted(TINY))
@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(variant, window):
    family_checks.assert_random_gates_match_the_official_loop(TINY[variant], BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise():
    family_checks.assert_remove_gives_the_original_bitwise(TINY["T2V"])


def test_checkpointing_gives_the_same_loss_and_gradients():
    family_checks.assert_checkpointing_gives_the_same_loss_and_gradients(TINY["T2V"])


def test_sdpa_routing_reproduces_the_stock_output_exactly():
    family_checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(TINY["T2V"])


def test_capture_records_one_softmax_row_set_per_block():
    family_checks.assert_capture_records_one_softmax_row_set_per_block(TINY["T2V"])


def test_capture_covers_the_video_self_attention_only():
    """One map per visual block, over the 48 video tokens (3 x 4 x 4): the text blocks and cross-attention are not
    captured."""
    from repvideo_diffusers.attention import capture_attention

    transformer, inputs = TINY["T2V"].build()
    with capture_attention(transformer) as capture:
        family_checks.run(transformer, inputs)
    assert capture.grid == (3, 4, 4)
    assert capture.layers == [f"visual_transformer_blocks.{i}.self_attention" for i in range(4)]
    assert [tuple(rows.shape) for rows in capture.maps] == [(2, 3, 48)] * 4


# --- pipelines end to end -----------------------------------------------------------------------------------------


def test_the_tiny_qwen_tokenizer_puts_the_prompt_right_after_the_pipelines_crop():
    from diffusers import Kandinsky5T2VPipeline

    pipe = Kandinsky5T2VPipeline(*[None] * 7)
    tokenizer = qwen_tokenizer()
    ids = tokenizer(pipe.prompt_template.format("a fox in snow")).input_ids
    assert tokenizer.convert_ids_to_tokens(ids[pipe.prompt_template_encode_start_idx:]) == [
        "a", " fox", " in", " snow", "<|im_end|>"]


@pytest.fixture(scope="module")
def t2v():
    return kandinsky5_pipeline()


def test_t2v_pipeline_zero_gates_change_nothing_and_disable_restores_bitwise(t2v):
    vanilla = kandinsky5_frames(t2v)
    assert vanilla.shape == (1, 3, 8, 8, 4) and np.isfinite(vanilla).all()
    t2v.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert np.array_equal(kandinsky5_frames(t2v), vanilla)
    t2v.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert t2v.transformer.repvideo_gates.gate.shape == (4,)
    assert np.abs(kandinsky5_frames(t2v) - vanilla).max() > 1e-3
    t2v.disable_repvideo()
    assert np.array_equal(kandinsky5_frames(t2v), vanilla)


def test_t2v_pipeline_with_guidance_decodes_a_video(t2v):
    """Classifier-free guidance (two transformer calls per step) and the VAE decode, with gates on."""
    t2v.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    try:
        video = kandinsky5_frames(t2v, output_type="np", guidance_scale=5.0, negative_prompt="red ball")
    finally:
        t2v.disable_repvideo()
    assert video.shape == (1, 9, 64, 64, 3) and np.isfinite(video).all()


def test_i2v_pipeline_zero_gates_change_nothing_and_disable_restores_bitwise():
    from PIL import Image

    pipe = kandinsky5_pipeline(image_to_video=True)
    image = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype("uint8"))
    # 21 frames (6 latent frames): the I2V pipeline renormalises the first 4 latent frames against the following
    # ones, and gives NaN when there are none.
    call = dict(image=image, num_frames=21)
    vanilla = kandinsky5_frames(pipe, **call)
    assert np.isfinite(vanilla).all()
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert np.array_equal(kandinsky5_frames(pipe, **call), vanilla)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert np.abs(kandinsky5_frames(pipe, **call) - vanilla).max() > 1e-3
    pipe.disable_repvideo()
    assert np.array_equal(kandinsky5_frames(pipe, **call), vanilla)


def test_analyze_reports_every_visual_block_for_both_runs(t2v):
    from repvideo_diffusers.analysis import analyze

    report = analyze(t2v, "a fox in snow", num_inference_steps=2, gates=RepVideoConfig(window=2, gate_init=0.5),
                     progress=False, height=64, width=64, num_frames=9, guidance_scale=1.0, max_sequence_length=16)
    for run in report["runs"].values():
        assert np.array(run["attention_similarity"]).shape == (2, 4, 4)
        assert np.array(run["frame_similarity"]).shape == (2, 4)
        assert run["grid"] == [3, 4, 4]
    assert not hasattr(t2v.transformer, "repvideo_gates")  # the pipeline's state is restored

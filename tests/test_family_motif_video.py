"""RepVideo on Motif-Video (`MotifVideoTransformer3DModel`): the family properties of tests/family_checks.py with and
without the DDT decoder blocks, and the text-to-video and image-to-video pipelines end to end (tiny, built
in-process: tests/tiny_pipelines_hunyuan.py).
"""

import diffusers
import pytest
import torch

import family_checks as checks
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import TinyModel, get_family_by_name, get_transformer_blocks
from tiny_pipelines_hunyuan import check_repvideo_on_pipeline, motif_frames, motif_pipeline

if not hasattr(diffusers, "MotifVideoTransformer3DModel"):
    pytest.skip("this diffusers has no MotifVideoTransformer3DModel", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAMILY = get_family_by_name("Motif-Video")
TINY = FAMILY.tiny  # 2 dual-stream, 2 encoder single-stream and 2 decoder single-stream blocks
JOINT = ("hidden_states", "encoder_hidden_states")


def _with_encoder_view(make_transformer):
    """The transformer with ``encoder_single_blocks``, a plain list (not a submodule) of the single-stream blocks
    before the decoder: stated here from the model's forward, so the reference loop can name them."""

    def make():
        transformer = make_transformer()
        singles = list(transformer.single_transformer_blocks)
        transformer.encoder_single_blocks = singles[: len(singles) - transformer.config.num_decoder_layers]
        return transformer

    return make


# Stated here, not read from the package: dual-stream then encoder single-stream blocks, one sequence; both take and
# return (video, text). The decoder blocks run on other streams and are not part of it.
BLOCK_LISTS = [("transformer_blocks", JOINT, (0, 1)), ("encoder_single_blocks", JOINT, (0, 1))]
WITH_DECODER = TinyModel("Motif-Video", _with_encoder_view(TINY.make_transformer), TINY.make_inputs, 4)


def _without_decoder():
    from diffusers import MotifVideoTransformer3DModel

    return MotifVideoTransformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2, num_single_layers=3,
        num_decoder_layers=0, patch_size=2, patch_size_t=1, text_embed_dim=16, image_embed_dim=16,
        rope_axes_dim=(2, 4, 2), enable_text_cross_attention_dual=True, enable_text_cross_attention_single=True)


WITHOUT_DECODER = TinyModel("Motif-Video", _with_encoder_view(_without_decoder), TINY.make_inputs, 5)
CONFIGS = {"with decoder": WITH_DECODER, "without decoder": WITHOUT_DECODER}


@pytest.fixture(params=sorted(CONFIGS))
def tiny(request):
    return CONFIGS[request.param]


def test_zero_gates_give_the_vanilla_output(tiny):
    checks.zero_gates_give_the_vanilla_output(tiny)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(tiny, window):
    checks.random_gates_match_the_official_loop(tiny, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise(tiny):
    checks.remove_gives_the_original_bitwise(tiny)


def test_checkpointing_gives_the_same_loss_and_gradients(tiny):
    checks.checkpointing_gives_the_same_loss_and_gradients(tiny)


def test_sdpa_routing_reproduces_the_stock_output_exactly():
    checks.sdpa_routing_reproduces_the_stock_output_exactly(TINY)


def test_capture_records_one_softmax_row_set_per_block():
    checks.capture_records_one_softmax_row_set_per_block(TINY)


def test_the_decoder_blocks_are_neither_gated_nor_hooked():
    transformer, inputs = TINY.build()
    singles = list(transformer.single_transformer_blocks)
    assert transformer.config.num_decoder_layers == 2 and len(singles) == 4
    assert get_transformer_blocks(transformer) == [*transformer.transformer_blocks, *singles[:2]]
    vanilla = checks.run(transformer, inputs)
    gates = apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.6))
    assert gates.gate.shape == (4,)
    assert all(not hasattr(block, "_diffusers_hook") for block in singles[2:])
    assert (checks.run(transformer, inputs) - vanilla).abs().max().item() > 1e-4


# ----------------------------------------------------------------------------------------------------------------
# Pipelines end to end
# ----------------------------------------------------------------------------------------------------------------


def test_the_text_to_video_pipeline_end_to_end():
    check_repvideo_on_pipeline(motif_pipeline(), motif_frames)


def test_the_image_to_video_pipeline_end_to_end():
    pipe = motif_pipeline(image_to_video=True)
    image_embeds = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: image_embeds.append(kwargs.get("image_embeds")), with_kwargs=True)
    check_repvideo_on_pipeline(pipe, motif_frames)
    handle.remove()
    assert image_embeds and all(torch.is_tensor(e) for e in image_embeds)  # the image really conditions the model

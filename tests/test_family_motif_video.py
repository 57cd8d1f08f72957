"""RepVideo on Motif-Video (`MotifVideoTransformer3DModel`): the family properties of tests/family_checks.py with and
without the DDT decoder blocks, the text-to-video and image-to-video pipelines end to end, and `repvideo train` on
the text-to-video pipeline (tiny, built in-process: tests/tiny_pipelines_hunyuan.py).
"""

import diffusers
import pytest
import torch

import family_checks as checks
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import TinyModel, get_family_by_name, get_transformer_blocks
from tiny_pipelines_hunyuan import PROMPT, assert_repvideo_on_pipeline, motif_frames, motif_pipeline

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
    checks.assert_zero_gates_give_the_vanilla_output(tiny)


@pytest.mark.parametrize("window", [2, 3])
def test_random_gates_match_the_official_loop(tiny, window):
    checks.assert_random_gates_match_the_official_loop(tiny, BLOCK_LISTS, window)


def test_remove_gives_the_original_bitwise(tiny):
    checks.assert_remove_gives_the_original_bitwise(tiny)


def test_checkpointing_gives_the_same_loss_and_gradients(tiny):
    checks.assert_checkpointing_gives_the_same_loss_and_gradients(tiny)


def test_sdpa_routing_reproduces_the_stock_output_exactly():
    checks.assert_sdpa_routing_reproduces_the_stock_output_exactly(TINY)


def test_capture_records_one_softmax_row_set_per_block():
    checks.assert_capture_records_one_softmax_row_set_per_block(TINY)


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
    assert_repvideo_on_pipeline(motif_pipeline(), motif_frames, num_blocks=4)  # 2 dual + 2 encoder single


def test_the_image_to_video_pipeline_end_to_end():
    pipe = motif_pipeline(image_to_video=True)
    image_embeds = []
    handle = pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: image_embeds.append(kwargs.get("image_embeds")), with_kwargs=True)
    assert_repvideo_on_pipeline(pipe, motif_frames, num_blocks=4)
    handle.remove()
    assert image_embeds and all(torch.is_tensor(e) for e in image_embeds)  # the image really conditions the model


# ----------------------------------------------------------------------------------------------------------------
# Training facts: what `repvideo train` feeds the transformer is what the text-to-video pipeline feeds it
# ----------------------------------------------------------------------------------------------------------------


def test_encoding_gives_the_normalised_vae_latents_and_the_padding_mask():
    from repvideo_diffusers.training.data import FAMILY_DATA

    pipe = motif_pipeline()
    facts = FAMILY_DATA["Motif-Video"]
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = facts.encode_video(pipe, video, torch.Generator().manual_seed(3))
        raw = pipe.vae.encode(video).latent_dist.sample(generator=torch.Generator().manual_seed(3))
        encoded = facts.encode_prompt(pipe, "abc", 16)
    # Independent reference: (z - mean) / std per channel with the VAE's statistics, written out here.
    mean = torch.tensor(pipe.vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std).view(1, -1, 1, 1, 1)
    assert latents.shape == (16, 2, 4, 4)
    torch.testing.assert_close(latents, ((raw - mean) / std)[0], rtol=1e-6, atol=1e-6)
    # "abc": the word marker, 3 characters and </s> are 5 real tokens, 11 padding.
    assert encoded["prompt_attention_mask"].tolist() == [True] * 5 + [False] * 11
    assert encoded["prompt_embeds"].shape == (16, 16)
    assert facts.max_sequence_length(pipe) == 512 and facts.default_size(pipe) == (736, 1280, 121)


def test_the_training_forward_is_the_pipelines_text_to_video_call():
    """Captured from a real pipeline call: the transformer's output for the kwargs the training builds from the same
    latents, prompt encoding and timestep is exactly the pipeline's."""
    from repvideo_diffusers.training.data import FAMILY_DATA

    pipe = motif_pipeline()
    calls = []

    def capture(module, args, kwargs, output):
        calls.append(({k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}, output[0].clone()))

    handle = pipe.transformer.register_forward_hook(capture, with_kwargs=True)
    motif_frames(pipe, steps=1)
    handle.remove()
    kwargs, expected = calls[0]  # the conditional branch of classifier-free guidance comes first
    latents = kwargs["hidden_states"][:, :16]
    batch = {key: value[None] for key, value in FAMILY_DATA["Motif-Video"].encode_prompt(pipe, PROMPT, 16).items()}
    built = FAMILY_DATA["Motif-Video"].forward_kwargs(pipe, latents, batch, kwargs["timestep"])
    assert torch.equal(built["hidden_states"], kwargs["hidden_states"])
    assert torch.equal(built["encoder_attention_mask"], kwargs["encoder_attention_mask"])
    with torch.no_grad():
        assert torch.equal(pipe.transformer(**built)[0], expected)


def test_a_tiny_motif_pipeline_trains_only_its_gates_end_to_end(tmp_path):
    import numpy as np
    from diffusers import DiffusionPipeline

    from repvideo_diffusers.training import TrainConfig, train
    from repvideo_diffusers.utils.video import read_video
    from train_helpers import write_clips

    clips = write_clips(tmp_path / "clips", ["stripes number 0", "stripes number 1"])
    pipe = motif_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    base = {n: p.detach().clone() for n, p in pipe.transformer.named_parameters()}
    result = train(TrainConfig(
        data=str(clips), output_dir=str(tmp_path / "run"), model=str(tmp_path / "model"), max_steps=3,
        checkpoint_every=100, learning_rate=1e-2, progress_bar=False, report_to=None, height=32, width=32,
        num_frames=5, max_sequence_length=16, validation_every=3, validation_steps=2,
    ))
    assert result.num_samples == 2 and result.steps == 3 and result.objective.startswith("flow matching")
    assert all(np.isfinite(loss) for loss in result.losses), result.losses
    assert len(result.gates) == 4 and max(abs(g - 0.5) for g in result.gates) > 1e-4, result.gates
    trained = dict(result.pipeline.transformer.named_parameters())
    assert [n for n in trained if n not in base or not torch.equal(trained[n], base[n])] == ["repvideo_gates.gate"]
    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "model")
    gates = reloaded.enable_repvideo(str(tmp_path / "run" / "repvideo"))
    assert gates.gate.tolist() == pytest.approx(result.gates, abs=0)
    # Validation runs the pipeline's own call with the trained gates attached.
    frames, _ = read_video(tmp_path / "run" / "validation" / "step-000003.mp4")
    assert frames.shape == (5, 32, 32, 3)

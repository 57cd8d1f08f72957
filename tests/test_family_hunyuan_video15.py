"""RepVideo on HunyuanVideo 1.5 (`HunyuanVideo15Transformer3DModel`): the family properties of tests/family_checks.py,
and the text-to-video and image-to-video pipelines end to end (tiny, built in-process: tests/tiny_pipelines_hunyuan.py).
"""

import diffusers
import pytest
import torch

import family_checks as checks
from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.families import get_family_by_name, get_transformer_blocks
from tiny_pipelines_hunyuan import PROMPT, assert_repvideo_on_pipeline, hunyuan_video15_frames, hunyuan_video15_pipeline

if not hasattr(diffusers, "HunyuanVideo15Transformer3DModel"):
    pytest.skip("this diffusers has no HunyuanVideo15Transformer3DModel", allow_module_level=True)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = get_family_by_name("HunyuanVideo-1.5").tiny
# Stated here, not read from the package: the dual-stream blocks take (video, text) and return (video, text); the
# token refiner's blocks run on the text alone before them and are not part of the sequence.
BLOCK_LISTS = [("transformer_blocks", ("hidden_states", "encoder_hidden_states"), (0, 1))]


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


def test_the_token_refiner_is_not_gated():
    transformer, _ = TINY.build()
    refiner = list(transformer.context_embedder.token_refiner.refiner_blocks)
    assert refiner and get_transformer_blocks(transformer) == list(transformer.transformer_blocks)
    apply_repvideo(transformer, RepVideoConfig())
    assert all(not hasattr(block, "_diffusers_hook") for block in refiner)


# ----------------------------------------------------------------------------------------------------------------
# Pipelines end to end
# ----------------------------------------------------------------------------------------------------------------


def test_the_text_to_video_pipeline_end_to_end():
    pipe = hunyuan_video15_pipeline()
    assert_repvideo_on_pipeline(pipe, hunyuan_video15_frames, num_blocks=4)


def test_the_image_to_video_pipeline_end_to_end():
    pipe = hunyuan_video15_pipeline(image_to_video=True)
    assert_repvideo_on_pipeline(pipe, hunyuan_video15_frames, num_blocks=4)


# ----------------------------------------------------------------------------------------------------------------
# Training facts: what `repvideo train` feeds the transformer is what the text-to-video pipeline feeds it
# ----------------------------------------------------------------------------------------------------------------


def test_encoding_gives_scaled_vae_latents_and_both_text_encoders_with_their_masks():
    from repvideo_diffusers.training.data import FAMILY_DATA

    pipe = hunyuan_video15_pipeline()
    facts = FAMILY_DATA["HunyuanVideo-1.5"]
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = facts.encode_video(pipe, video, torch.Generator().manual_seed(3))
        raw = pipe.vae.encode(video).latent_dist.sample(generator=torch.Generator().manual_seed(3))
        encoded = facts.encode_prompt(pipe, 'a fox, a sign that says "hi"', 12)
    assert latents.shape == (4, 2, 4, 4)
    torch.testing.assert_close(latents, raw[0] * 1.03682, rtol=0, atol=0)
    # Qwen: the caption's 8 pieces and the template's closing 5 ("<|im_end|>", "\n", "<|im_start|>", "assistant",
    # "\n") after the cropped system part, in a budget of 12: truncated, no padding.
    assert encoded["prompt_attention_mask"].tolist() == [True] * 12 and encoded["prompt_embeds"].shape == (12, 16)
    assert pipe.tokenizer_max_length == 16  # the pipeline's own budget is left as it was
    # ByT5 encodes the quoted glyph text, 'Text "hi". ' (its 12 tokens cut at the pipeline's 8); a caption without
    # quotes has none: zero embeddings, all masked.
    assert encoded["prompt_attention_mask_2"].tolist() == [True] * 8 and encoded["prompt_embeds_2"].shape == (8, 16)
    with torch.no_grad():
        plain = facts.encode_prompt(pipe, "a fox", 12)
    assert plain["prompt_attention_mask_2"].tolist() == [False] * 8 and not plain["prompt_embeds_2"].any()
    assert plain["prompt_attention_mask"].tolist() == [True] * 7 + [False] * 5  # 2 words + the closing 5, padded
    assert facts.max_sequence_length(pipe) == 16 and facts.default_size(pipe)[2] == 121
    assert facts.size_multiples(pipe) == (4, 8)


def test_the_training_forward_is_the_pipelines_text_to_video_call():
    """Captured from a real pipeline call: the transformer's output for the kwargs the training builds from the same
    latents, prompt encoding and timestep is exactly the pipeline's."""
    from repvideo_diffusers.training.data import FAMILY_DATA

    pipe = hunyuan_video15_pipeline()
    calls = []

    def capture(module, args, kwargs, output):
        calls.append(({k: v.clone() if torch.is_tensor(v) else v for k, v in kwargs.items()}, output[0].clone()))

    handle = pipe.transformer.register_forward_hook(capture, with_kwargs=True)
    hunyuan_video15_frames(pipe, steps=1)
    handle.remove()
    kwargs, expected = calls[0]  # the conditional branch of classifier-free guidance comes first
    latents = kwargs["hidden_states"][:, :4]
    with torch.no_grad():  # as `repvideo train` encodes (T5's kernels differ in the last bit with autograd on)
        encoded = FAMILY_DATA["HunyuanVideo-1.5"].encode_prompt(pipe, PROMPT, pipe.tokenizer_max_length)
    batch = {key: value[None] for key, value in encoded.items()}
    built = FAMILY_DATA["HunyuanVideo-1.5"].forward_kwargs(pipe, latents, batch, kwargs["timestep"])
    for name in ("hidden_states", "encoder_hidden_states", "encoder_hidden_states_2", "image_embeds"):
        assert torch.equal(built[name], kwargs[name]), name
    with torch.no_grad():
        assert torch.equal(pipe.transformer(**built)[0], expected)


def test_a_tiny_hunyuan_video15_pipeline_trains_only_its_gates_end_to_end(tmp_path):
    import numpy as np
    from diffusers import DiffusionPipeline

    from repvideo_diffusers.training import TrainConfig, train
    from train_helpers import write_clips

    clips = write_clips(tmp_path / "clips", ["stripes number 0", "stripes number 1"])
    pipe = hunyuan_video15_pipeline()
    pipe.save_pretrained(tmp_path / "model")  # reloaded with the pipeline's own token budgets (1000 Qwen tokens)
    base = {n: p.detach().clone() for n, p in pipe.transformer.named_parameters()}
    result = train(TrainConfig(
        data=str(clips), output_dir=str(tmp_path / "run"), model=str(tmp_path / "model"), max_steps=3,
        checkpoint_every=100, learning_rate=1e-2, progress_bar=False, report_to=None, height=32, width=32,
        num_frames=5, max_sequence_length=16,
    ))
    assert result.num_samples == 2 and result.steps == 3 and result.objective.startswith("flow matching")
    assert all(np.isfinite(loss) for loss in result.losses), result.losses
    assert len(result.gates) == 4 and max(abs(g - 0.5) for g in result.gates) > 1e-4, result.gates
    trained = dict(result.pipeline.transformer.named_parameters())
    assert [n for n in trained if n not in base or not torch.equal(trained[n], base[n])] == ["repvideo_gates.gate"]
    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "model")
    gates = reloaded.enable_repvideo(str(tmp_path / "run" / "repvideo"))
    assert gates.gate.tolist() == pytest.approx(result.gates, abs=0)

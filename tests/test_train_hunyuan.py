"""Specifications of `repvideo train` on a tiny HunyuanVideo pipeline built here (Llama + CLIP text encoders,
tokenizers made in-process), with real mp4 clips."""

import inspect
import json
import re

import numpy as np
import pytest
import torch

from repvideo_diffusers.training import TrainConfig, train
from repvideo_diffusers.utils.video import read_video
from train_helpers import write_clips

_CAPTIONS = ["stripes number 0", "stripes number 1"]
_WORDS = ["stripes", "number", "a", "red", "ball", "rolling", "across", "wooden", "table", "abc", "0", "1"]
_LLAMA_SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# Llama 3's pre-tokenisation rule: with one token per piece, the template's system part is exactly the
# pipeline's crop_start (95) tokens, BOS included, as with the released tokenizer.
_LLAMA_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("clips"), _CAPTIONS)


def _llama_tokenizer():
    """Word-level over the template's pieces and a few test words, Llama 3's split rule and special tokens."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Split(Regex(_LLAMA_SPLIT), behavior="isolated")
    text = DEFAULT_PROMPT_TEMPLATE["template"].format(" ".join(_WORDS))
    pieces = set()
    for part in re.split("|".join(map(re.escape, _LLAMA_SPECIALS)), text):
        pieces.update(piece for piece, _ in split.pre_tokenize_str(part))
    pieces.update(_WORDS + [" " + word for word in _WORDS])
    vocab = ["<|begin_of_text|>", "<unk>", "<pad>", *_LLAMA_SPECIALS, *sorted(pieces)]
    tokenizer = Tokenizer(models.WordLevel({piece: i for i, piece in enumerate(vocab)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = split
    tokenizer.add_special_tokens([AddedToken(s, special=True) for s in _LLAMA_SPECIALS])
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
    # The generic fast class, as the released Llama 3 tokenizer is saved: transformers' LlamaTokenizer would
    # replace the split rule by SentencePiece's on reload.
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                                   unk_token="<unk>", pad_token="<pad>", padding_side="right", model_max_length=512)


def _clip_tokenizer():
    """Character-level BPE (no merges) with CLIP's end-of-word suffix and start/end tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import CLIPTokenizerFast

    chars = [chr(c) for c in range(33, 127)]
    vocab = ["<|startoftext|>", "<|endoftext|>", "<unk>", *chars, *(c + "</w>" for c in chars)]
    tokenizer = Tokenizer(models.BPE({piece: i for i, piece in enumerate(vocab)}, [], unk_token="<unk>",
                                     end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)])
    return CLIPTokenizerFast(tokenizer_object=tokenizer, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                             unk_token="<unk>", pad_token="<|endoftext|>", model_max_length=77)


def _tiny_hunyuan_pipeline():
    """HunyuanVideoPipeline: 2-layer Llama (width 16), CLIP (width 8), an 8x spatial / 4x temporal VAE of 4 latent
    channels and the tiny 5-block transformer of `repvideo_diffusers.testing`."""
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    from repvideo_diffusers.testing import TINY_MODELS

    tokenizer, tokenizer_2 = _llama_tokenizer(), _clip_tokenizer()
    torch.manual_seed(0)
    text_encoder = LlamaModel(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer_2), hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=8, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    torch.manual_seed(1)
    vae = AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4,
        mid_block_add_attention=False,
    )
    transformer, _ = TINY_MODELS["HunyuanVideo"].build(seed=0)
    return HunyuanVideoPipeline(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
                                scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0), text_encoder_2=text_encoder_2,
                                tokenizer_2=tokenizer_2)


def _template():
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

    return DEFAULT_PROMPT_TEMPLATE["template"]


def test_the_tiny_llama_tokenizer_puts_the_prompt_right_after_the_pipelines_crop_start():
    """The test tokenizer is faithful to the pipeline's convention, so the mask below means what it says."""
    pipe = _tiny_hunyuan_pipeline()
    ids = pipe.tokenizer(_template().format("stripes number 0")).input_ids
    tokens = pipe.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[95:] == ["stripes", " number", " ", "0", "<|eot_id|>"]


def test_encoding_gives_scaled_vae_latents_and_both_text_encoders_with_the_llama_padding_mask():
    from repvideo_diffusers.training.data import FAMILY_DATA

    pipe = _tiny_hunyuan_pipeline()
    facts = FAMILY_DATA["HunyuanVideo"]
    video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
    with torch.no_grad():
        latents = facts.encode_video(pipe, video, torch.Generator().manual_seed(3))
        raw = pipe.vae.encode(video).latent_dist.sample(generator=torch.Generator().manual_seed(3))
        encoded = facts.encode_prompt(pipe, "stripes number 0", 16)
        # Independent reference for the pooled projection: CLIP's output at its end-of-text token, computed here.
        ids = pipe.tokenizer_2("stripes number 0").input_ids  # start, 14 characters, end
        assert len(ids) == 16 and ids[-1] == 1
        pooled = pipe.text_encoder_2(torch.tensor([ids + [1] * (77 - 16)])).last_hidden_state[0, 15]
    # (B, C, F, H, W) as the transformer takes it, times the factor the pipeline divides by before decoding.
    assert latents.shape == (4, 2, 4, 4)
    torch.testing.assert_close(latents, raw[0] * 0.476986, rtol=0, atol=0)
    # "stripes", " number", " ", "0", "<|eot_id|>" after the 95 cropped template tokens, then 11 padding.
    assert encoded["prompt_attention_mask"].tolist() == [1] * 5 + [0] * 11
    assert encoded["prompt_embeds"].shape == (16, 16)
    torch.testing.assert_close(encoded["pooled_prompt_embeds"], pooled, rtol=1e-6, atol=1e-6)
    assert facts.max_sequence_length(pipe) == 256 and facts.default_size(pipe) == (720, 1280, 129)


def test_the_training_forward_passes_the_pipelines_default_guidance_times_1000():
    from repvideo_diffusers.training.data import FAMILY_DATA

    pipe = _tiny_hunyuan_pipeline()
    batch = {"prompt_embeds": torch.zeros(2, 16, 16), "pooled_prompt_embeds": torch.zeros(2, 8),
             "prompt_attention_mask": torch.ones(2, 16, dtype=torch.long)}
    kwargs = FAMILY_DATA["HunyuanVideo"].forward_kwargs(pipe, torch.zeros(2, 4, 2, 4, 4), batch, torch.tensor([1.0, 2]))
    default = inspect.signature(type(pipe).__call__).parameters["guidance_scale"].default
    assert kwargs["guidance"].tolist() == [default * 1000.0] * 2 == [6000.0, 6000.0]
    assert kwargs["pooled_projections"] is batch["pooled_prompt_embeds"]
    assert kwargs["encoder_attention_mask"] is batch["prompt_attention_mask"]


def test_the_training_forward_ignores_the_text_padding_as_the_pipeline_does():
    """The padding mask reaches the transformer: what sits in padded positions does not change the prediction."""
    from repvideo_diffusers.training.data import FAMILY_DATA, _tensors

    pipe = _tiny_hunyuan_pipeline()
    facts = FAMILY_DATA["HunyuanVideo"]
    with torch.no_grad():
        video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
        sample = {**_tensors(facts.encode_video(pipe, video, torch.Generator().manual_seed(0)), "latents"),
                  **_tensors(facts.encode_prompt(pipe, "stripes number 0", 16), "prompt_embeds")}
        batch = {key: value[None] for key, value in sample.items()}
        padding = batch["prompt_attention_mask"] == 0
        assert padding.sum() == 11
        noise = torch.randn(batch["prompt_embeds"].shape, generator=torch.Generator().manual_seed(1)) * 5
        scrambled = dict(batch, prompt_embeds=torch.where(padding[..., None], noise, batch["prompt_embeds"]))
        timestep = torch.tensor([400.0])

        def predict(values, mask=True):
            kwargs = facts.forward_kwargs(pipe, values["latents"], values, timestep)
            if not mask:
                kwargs["encoder_attention_mask"] = torch.ones_like(kwargs["encoder_attention_mask"])
            return pipe.transformer(**kwargs)[0]

        torch.testing.assert_close(predict(scrambled), predict(batch), rtol=1e-5, atol=1e-5)
        # Without the mask the padding does matter, so the equality above is the mask's doing.
        assert (predict(scrambled, mask=False) - predict(batch, mask=False)).abs().max() > 1e-3


def test_a_tiny_hunyuan_pipeline_trains_only_its_gates_end_to_end(clips, tmp_path):
    from diffusers import DiffusionPipeline

    pipe = _tiny_hunyuan_pipeline()
    pipe.save_pretrained(tmp_path / "model")
    base = {n: p.detach().clone() for n, p in pipe.transformer.named_parameters()}
    result = train(TrainConfig(
        data=str(clips), output_dir=str(tmp_path / "run"), model=str(tmp_path / "model"), max_steps=3,
        checkpoint_every=100, learning_rate=1e-2, progress_bar=False, report_to=None, height=32, width=32,
        num_frames=5, max_sequence_length=16, validation_every=3, validation_steps=2,
    ))
    assert result.num_samples == 2 and result.steps == 3
    assert result.objective.startswith("flow matching")
    assert all(np.isfinite(loss) for loss in result.losses), result.losses
    assert max(abs(g - 0.5) for g in result.gates) > 1e-4, result.gates
    trained = dict(result.pipeline.transformer.named_parameters())
    changed = [n for n in trained if n not in base or not torch.equal(trained[n], base[n])]
    assert changed == ["repvideo_gates.gate"]
    assert len(result.gates) == 5  # 2 dual-stream + 3 single-stream blocks, one gate each

    reloaded = DiffusionPipeline.from_pretrained(tmp_path / "model")
    gates = reloaded.enable_repvideo(str(tmp_path / "run" / "repvideo"))
    assert gates.gate.tolist() == pytest.approx(result.gates, abs=0)
    # Validation runs HunyuanVideoPipeline's own call (default guidance) with the trained gates attached.
    frames, _ = read_video(tmp_path / "run" / "validation" / "step-000003.mp4")
    assert frames.shape == (5, 32, 32, 3)


@pytest.mark.parametrize("frames, size, message", [
    (6, 32, r"--num-frames must be 1 \+ 4k for this model, got 6. Use 5."),
    (5, 24, r"--height must be a multiple of 16 for this model, got 24"),
])
def test_sizes_the_vae_and_patches_cannot_take_are_refused_before_anything_is_written(
        clips, tmp_path, frames, size, message):
    _tiny_hunyuan_pipeline().save_pretrained(tmp_path / "model")
    config = TrainConfig(data=str(clips), output_dir=str(tmp_path / "run"), model=str(tmp_path / "model"),
                         max_steps=1, progress_bar=False, report_to=None, height=size, width=32, num_frames=frames)
    with pytest.raises(ValueError, match=message):
        train(config)
    assert not (tmp_path / "run" / "repvideo").exists()


def test_the_cli_trains_a_hunyuan_folder_passed_as_model(clips, tmp_path):
    from diffusers import HunyuanVideoPipeline

    from repvideo_diffusers.cli import main

    _tiny_hunyuan_pipeline().save_pretrained(tmp_path / "model")
    code = main(["train", "--data", str(clips), "--out", str(tmp_path / "run"), "--model", str(tmp_path / "model"),
                 "--max-steps", "2", "--learning-rate", "1e-2", "--height", "32", "--width", "32", "--num-frames", "5",
                 "--max-sequence-length", "16", "--report-to", "none"])
    assert code == 0
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["steps"] == 2 and all(np.isfinite(summary["losses"]))
    assert summary["num_samples"] == 2 and summary["objective"].startswith("flow matching")
    pipe = HunyuanVideoPipeline.from_pretrained(tmp_path / "model")
    gates = pipe.enable_repvideo(str(tmp_path / "run" / "repvideo"))
    assert gates.gate.tolist() == pytest.approx(summary["gates"], abs=0)


def test_a_tokenizer_that_leaves_no_caption_after_crop_start_is_refused_with_the_fix():
    """A Llama tokenizer whose template prefix is shorter than crop_start: all padding, NaN losses otherwise."""
    from repvideo_diffusers.training.data import FAMILY_DATA

    pipe = _tiny_hunyuan_pipeline()
    with pytest.raises(ValueError, match=r"nothing of the caption 'stripes' .* all-padding mask of 4\. Use the "
                                         r"tokenizer the pipeline was released with"):
        # About 7 real tokens in 95 + 4 positions: cropping the first 95 leaves only padding.
        FAMILY_DATA["HunyuanVideo"].encode_prompt(_ShortTemplate(pipe), "stripes", 4)


class _ShortTemplate:
    """The pipeline with a Llama tokenizer that drops the template's system part (prefix 95 -> 5 tokens)."""

    def __init__(self, pipe):
        self._pipe = pipe

    def encode_prompt(self, text, **kwargs):
        from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video import DEFAULT_PROMPT_TEMPLATE

        template = DEFAULT_PROMPT_TEMPLATE["template"]
        short = {"template": template[template.index("<|start_header_id|>user"):], "crop_start": 95}
        return self._pipe.encode_prompt(text, prompt_template=short, **kwargs)

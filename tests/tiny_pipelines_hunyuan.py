"""Tiny random pipelines of the HunyuanVideo-like families (HunyuanVideo 1.5, FramePack, Motif-Video), built in the
test process: random configurations, word-level tokenizers made with `tokenizers` from the pipelines' own prompt
templates (so every template token is in the vocabulary and the pipelines' crop positions mean what they say), no
download.
"""

import inspect
import re

import numpy as np
import torch

# Llama 3's and Qwen 2's pre-tokenisation rule (one piece, one token in these word-level tokenizers).
_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
WORDS = ["a", "fox", "in", "snow", "red", "ball", "sign", "that", "says", "hi", "rolling", "across", "table"]
PROMPT = 'a red fox in snow, a sign that says "hi"'  # the quoted text is HunyuanVideo 1.5's ByT5 glyph text


def word_tokenizer(texts, specials, bos, eos, pad, chat_template=None, model_max_length=512):
    """Word-level `PreTrainedTokenizerFast` over the pieces of ``texts`` (split by `_SPLIT`) and `WORDS`."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated")
    pieces = set()
    for text in texts:
        for part in re.split("|".join(map(re.escape, specials)), text):
            pieces.update(piece for piece, _ in split.pre_tokenize_str(part))
    pieces.update(WORDS + [" " + word for word in WORDS])
    front = [token for token in dict.fromkeys([bos, "<unk>", pad, eos, *specials]) if token]
    vocab = front + sorted(pieces - set(front))
    tokenizer = Tokenizer(models.WordLevel({piece: i for i, piece in enumerate(vocab)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = split
    tokenizer.add_special_tokens([AddedToken(s, special=True) for s in specials])
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, unk_token="<unk>",
                                   pad_token=pad, padding_side="right", model_max_length=model_max_length,
                                   chat_template=chat_template)


def clip_tokenizer():
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


def siglip(seed: int, hidden_size: int = 16, image_size: int = 16):
    """(SigLIP vision tower of ``hidden_size`` on ``image_size`` pixels in 8-pixel patches, its image processor)."""
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    model = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=1, num_attention_heads=2,
        image_size=image_size, patch_size=8))
    processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    return model.eval(), processor


def image(size: int = 32, seed: int = 0):
    """A random RGB PIL image."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def assert_repvideo_on_pipeline(pipe, frames, num_blocks: int):
    """One gate per gated block; zero gates change nothing, 0.6 gates change the output, `disable_repvideo` restores
    it bitwise."""
    from repvideo_diffusers import RepVideoConfig

    vanilla = frames(pipe)
    gates = pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.0))
    assert gates.gate.shape == (num_blocks,)
    assert torch.equal(frames(pipe), vanilla)
    pipe.enable_repvideo(RepVideoConfig(window=2, gate_init=0.6))
    assert (frames(pipe) - vanilla).abs().max().item() > 1e-4
    pipe.disable_repvideo()
    assert not hasattr(pipe.transformer, "repvideo_gates")
    assert torch.equal(frames(pipe), vanilla)


# ----------------------------------------------------------------------------------------------------------------
# HunyuanVideo 1.5: Qwen2.5-VL text model + ByT5 (a T5 encoder), SigLIP for image-to-video
# ----------------------------------------------------------------------------------------------------------------

_QWEN_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]
_QWEN_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
                  "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
                  "{% endif %}")


def hunyuan_video15_pipeline(image_to_video: bool = False, seed: int = 0):
    """HunyuanVideo15Pipeline (or its image-to-video pipeline): a 3-layer Qwen2.5-VL text model (width 16; the
    pipeline reads the hidden state two layers before the last), a T5
    encoder for the ByT5 glyph text, an 8x spatial / 4x temporal VAE of 4 latent channels and a 4-block transformer.

    The pipelines' lengths are instance attributes, set small here: 16 Qwen tokens after the template's system part
    (whose length, in this tokenizer, is the crop start), 8 ByT5 tokens, 4 SigLIP tokens per image.
    """
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15ImageToVideoPipeline,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import format_text_input
    from jinja2 import Template
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    from tiny_pipelines import t5

    # The pipeline's system message (an instance attribute set in __init__, equal to this default; checked below)
    # and the template text as `apply_chat_template` renders it: every piece of it is in the vocabulary.
    system = inspect.signature(HunyuanVideo15Pipeline._get_mllm_prompt_embeds).parameters["system_message"].default
    messages = format_text_input(["fox"], system)
    tokenizer = word_tokenizer([Template(_QWEN_TEMPLATE).render(messages=messages[0], add_generation_prompt=True)],
                               _QWEN_SPECIALS, bos=None, eos="<|im_end|>", pad="<|endoftext|>",
                               chat_template=_QWEN_TEMPLATE)
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    crop_start = ids["input_ids"][0].index(tokenizer.convert_tokens_to_ids("fox"))  # the prompt's first token

    torch.manual_seed(seed)
    text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]},
        pad_token_id=tokenizer.pad_token_id, bos_token_id=None, eos_token_id=tokenizer.eos_token_id)).eval()
    tokenizer_2, text_encoder_2 = t5(seed + 1)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLHunyuanVideo15(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        spatial_compression_ratio=8, temporal_compression_ratio=4, scaling_factor=1.03682)
    torch.manual_seed(seed + 3)
    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=4,
        num_refiner_layers=1, patch_size=1, patch_size_t=1, text_embed_dim=16, text_embed_2_dim=16,
        image_embed_dim=16, rope_axes_dim=(2, 4, 2), target_size=32, task_type="i2v" if image_to_video else "t2v")
    components = dict(text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
                      scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), text_encoder_2=text_encoder_2,
                      tokenizer_2=tokenizer_2, guider=ClassifierFreeGuidance(guidance_scale=6.0))
    if image_to_video:
        components["image_encoder"], components["feature_extractor"] = siglip(seed + 4)
        pipe = HunyuanVideo15ImageToVideoPipeline(**components)
    else:
        pipe = HunyuanVideo15Pipeline(**components)
    assert pipe.system_message == system
    pipe.prompt_template_encode_start_idx = crop_start
    pipe.tokenizer_max_length = 16
    pipe.tokenizer_2_max_length = 8
    pipe.vision_num_semantic_tokens = 4  # text-to-video: zero image tokens, as many as SigLIP gives image-to-video
    pipe.set_progress_bar_config(disable=True)
    return pipe


def hunyuan_video15_frames(pipe, steps: int = 2, seed: int = 0):
    """The denoised latents (what the transformer produces, before the VAE) of one tiny call."""
    kwargs = dict(prompt=PROMPT, negative_prompt="", num_inference_steps=steps, num_frames=5, output_type="latent",
                  generator=torch.Generator().manual_seed(seed))
    if hasattr(pipe, "image_encoder"):
        kwargs["image"] = image(32, seed)
    else:
        kwargs.update(height=32, width=32)
    return pipe(**kwargs).frames



# ----------------------------------------------------------------------------------------------------------------
# HunyuanVideo FramePack: Llama + CLIP text encoders (as HunyuanVideo), SigLIP image encoder, HunyuanVideo's VAE
# ----------------------------------------------------------------------------------------------------------------

_LLAMA_SPECIALS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def llama_tokenizer(template: str):
    """Word-level over the HunyuanVideo prompt template's pieces, Llama 3's split rule and special tokens: the
    template's system part is exactly its ``crop_start`` tokens, BOS included, as with the released tokenizer."""
    return word_tokenizer([template.format(" ".join(WORDS))], _LLAMA_SPECIALS, bos="<|begin_of_text|>",
                          eos="<|eot_id|>", pad="<pad>")


def hunyuan_video_vae(seed: int):
    """HunyuanVideo's causal VAE: 8x spatial, 4x temporal, 4 latent channels."""
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(seed)
    return AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4,
        mid_block_add_attention=False,
    )


def framepack_pipeline(seed: int = 0):
    """HunyuanVideoFramepackPipeline: a 2-layer Llama (width 16), CLIP (width 8), SigLIP (width 16), the 8x / 4x VAE
    of 4 latent channels and a 2 double- + 3 single-stream block transformer with FramePack's history embedders."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoFramepackPipeline,
        HunyuanVideoFramepackTransformer3DModel,
    )
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import DEFAULT_PROMPT_TEMPLATE
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    tokenizer, tokenizer_2 = llama_tokenizer(DEFAULT_PROMPT_TEMPLATE["template"]), clip_tokenizer()
    ids = tokenizer(DEFAULT_PROMPT_TEMPLATE["template"].format("fox")).input_ids
    assert ids.index(tokenizer.convert_tokens_to_ids("fox")) == DEFAULT_PROMPT_TEMPLATE["crop_start"]
    torch.manual_seed(seed)
    text_encoder = LlamaModel(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)).eval()
    text_encoder_2 = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer_2), hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()
    image_encoder, feature_extractor = siglip(seed + 1)
    vae = hunyuan_video_vae(seed + 2)
    torch.manual_seed(seed + 3)
    transformer = HunyuanVideoFramepackTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_single_layers=3, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 2), has_image_proj=True, image_proj_dim=16,
        has_clean_x_embedder=True,
    )
    pipe = HunyuanVideoFramepackPipeline(
        text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer, vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2,
        image_encoder=image_encoder, feature_extractor=feature_extractor)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def framepack_frames(pipe, steps: int = 2, seed: int = 0, sampling_type=None):
    """The latents of every generated section (one 2-latent-frame section here), concatenated along time."""
    from diffusers.pipelines.hunyuan_video.pipeline_hunyuan_video_framepack import FramepackSamplingType

    frames = pipe(image=image(32, seed), prompt=PROMPT, height=32, width=32, num_frames=5, latent_window_size=2,
                  num_inference_steps=steps, guidance_scale=6.0, max_sequence_length=16, output_type="latent",
                  generator=torch.Generator().manual_seed(seed),
                  sampling_type=sampling_type or FramepackSamplingType.INVERTED_ANTI_DRIFTING).frames
    return torch.cat(frames, dim=2)


# ----------------------------------------------------------------------------------------------------------------
# Motif-Video: T5Gemma2 encoder (its SigLIP tower encodes the image of image-to-video), Wan's VAE
# ----------------------------------------------------------------------------------------------------------------


def t5gemma2_encoder(seed: int, vocab_size: int):
    """A 1-layer T5Gemma2 encoder of width 16 with a SigLIP tower of width 16 on 16-pixel images."""
    from transformers import T5Gemma2Encoder, T5Gemma2EncoderConfig

    torch.manual_seed(seed)
    config = T5Gemma2EncoderConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, query_pre_attn_scalar=8,
                         max_position_embeddings=512, sliding_window=16, pad_token_id=0, eos_token_id=1,
                         bos_token_id=None),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32,
                           num_hidden_layers=1, num_attention_heads=2, image_size=16, patch_size=8),
        mm_tokens_per_image=4, boi_token_index=vocab_size, eoi_token_index=vocab_size + 1,
        image_token_index=vocab_size + 2)
    config.text_config.dropout_rate = 0.0  # set by T5Gemma2Config on its encoder; a standalone encoder needs it
    return T5Gemma2Encoder(config, eoi_token_index=config.eoi_token_index).eval()


def motif_pipeline(image_to_video: bool = False, seed: int = 0):
    """MotifVideoPipeline (or its image-to-video pipeline): T5Gemma2 (width 16), Wan's VAE (16 latent channels) and
    a transformer with the released layout in small: 2 dual-stream, 2 encoder and 2 decoder single-stream blocks,
    shared text cross-attention, image conditioning from the text encoder's SigLIP tower (width 16)."""
    from diffusers import (
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        MotifVideoImage2VideoPipeline,
        MotifVideoPipeline,
        MotifVideoTransformer3DModel,
    )
    from transformers import SiglipImageProcessor

    from repvideo_diffusers.tiny import build_tokenizer
    from tiny_pipelines import wan_vae

    tokenizer = build_tokenizer()
    text_encoder = t5gemma2_encoder(seed, len(tokenizer))
    torch.manual_seed(seed + 1)
    transformer = MotifVideoTransformer3DModel(
        in_channels=33, out_channels=16, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_single_layers=4, num_decoder_layers=2, patch_size=2, patch_size_t=1, text_embed_dim=16,
        image_embed_dim=16, rope_axes_dim=(2, 4, 2), enable_text_cross_attention_dual=True,
        enable_text_cross_attention_single=True)
    components = dict(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=wan_vae(seed + 2),
                      text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                      guider=ClassifierFreeGuidance(guidance_scale=5.0),
                      feature_extractor=SiglipImageProcessor(size={"height": 16, "width": 16}))
    pipe = (MotifVideoImage2VideoPipeline if image_to_video else MotifVideoPipeline)(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def motif_frames(pipe, steps: int = 2, seed: int = 0):
    """The denoised latents (what the transformer produces, before the VAE) of one tiny call."""
    from diffusers import MotifVideoImage2VideoPipeline

    kwargs = dict(prompt=PROMPT, negative_prompt="", height=32, width=32, num_frames=5, num_inference_steps=steps,
                  max_sequence_length=16, output_type="latent", generator=torch.Generator().manual_seed(seed))
    if isinstance(pipe, MotifVideoImage2VideoPipeline):
        kwargs["image"] = image(32, seed)
    return pipe(**kwargs).frames

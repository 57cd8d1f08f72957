"""Tiny random pipelines of the Kandinsky 5, Kandinsky 6 SR, LTX-2 and SANA-WM families, built in the test process
(no download).

Text encoders come from tiny random configurations (Qwen2.5-VL and CLIP for Kandinsky 5, Gemma 3 for LTX-2 and the
SANA-WM refiner, Gemma 2 for SANA-WM); tokenizers are built here with `tokenizers`.
"""

import re

import numpy as np
import torch

# Qwen2's pre-tokenisation rule (GPT-4 style, single digits).
_QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# With one token per piece the Kandinsky 5 template's prefix is 125 tokens; three words split in two make it exactly
# the pipeline's `prompt_template_encode_start_idx` (128), so the crop removes the template and nothing else.
_KANDINSKY_SUBWORDS = r"(?<=scr)en|(?<=post)processing|(?<=dynam)ism"
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>"]
WORDS = ["a", "fox", "in", "snow", "red", "ball", "rolling"]


def _kandinsky5_template() -> str:
    from diffusers import Kandinsky5T2VPipeline

    return Kandinsky5T2VPipeline(*[None] * 7).prompt_template


def qwen_tokenizer():
    """Word-level over the Kandinsky 5 template's pieces and `WORDS`, Qwen2's split rule and special tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated"),
                                     pre_tokenizers.Split(Regex(_KANDINSKY_SUBWORDS), behavior="isolated")])
    text = _kandinsky5_template().format(" ".join(WORDS))
    pieces = set(WORDS + [" " + word for word in WORDS])
    for part in re.split("|".join(map(re.escape, _QWEN_SPECIALS)), text):
        pieces.update(piece for piece, _ in split.pre_tokenize_str(part))
    vocab = [*_QWEN_SPECIALS, "<unk>", *sorted(pieces)]
    tokenizer = Tokenizer(models.WordLevel({piece: i for i, piece in enumerate(vocab)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = split
    tokenizer.add_special_tokens([AddedToken(s, special=True) for s in _QWEN_SPECIALS])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token="<unk>", padding_side="right", model_max_length=1024)


class QwenTextProcessor:
    """The text half of `Qwen2VLProcessor`, which is what the Kandinsky 5 video pipelines call (``images=None,
    videos=None``).

    transformers 5 cannot build a `Qwen2VLProcessor` without torchvision (its video processor needs it), which this
    environment does not have; without images or videos the processor tokenises the text with its tokenizer and
    nothing else, as this stand-in does.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text=None, images=None, videos=None, **kwargs):
        assert images is None and videos is None, "the stand-in processor has no image or video processor"
        return self.tokenizer(text, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)


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


def qwen25_vl(vocab_size: int, seed: int = 0):
    """A one-layer Qwen2.5-VL of text width 16 (and a one-layer vision tower the video pipelines never call)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}, bos_token_id=None,
                         eos_token_id=2, pad_token_id=0),
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=16,
                           fullatt_block_indexes=[0]),
    )
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def clip_text_model(vocab_size: int, seed: int = 0):
    """A one-layer CLIP text model whose pooled output has width 8."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    return CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()


def hunyuan_video_vae(seed: int = 1):
    """`AutoencoderKLHunyuanVideo` with 4 latent channels, 8x spatial and 4x temporal compression."""
    from diffusers import AutoencoderKLHunyuanVideo

    torch.manual_seed(seed)
    return AutoencoderKLHunyuanVideo(
        in_channels=3, out_channels=3, latent_channels=4, down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), layers_per_block=1,
        norm_num_groups=4, scaling_factor=0.476986, spatial_compression_ratio=8, temporal_compression_ratio=4,
        mid_block_add_attention=False,
    )


def kandinsky5_pipeline(image_to_video: bool = False):
    """`Kandinsky5T2VPipeline` (or `Kandinsky5I2VPipeline`) around the family's tiny transformer (4 visual blocks;
    the I2V one takes the first-frame condition channels)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Kandinsky5I2VPipeline, Kandinsky5T2VPipeline

    from repvideo_diffusers.families import kandinsky5

    torch.manual_seed(0)
    transformer = kandinsky5._tiny_transformer(visual_cond=image_to_video)().eval()
    qwen, clip = qwen_tokenizer(), clip_tokenizer()
    cls = Kandinsky5I2VPipeline if image_to_video else Kandinsky5T2VPipeline
    pipe = cls(transformer=transformer, vae=hunyuan_video_vae(), text_encoder=qwen25_vl(len(qwen)),
               tokenizer=QwenTextProcessor(qwen), text_encoder_2=clip_text_model(len(clip)), tokenizer_2=clip,
               scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def kandinsky5_frames(pipe, steps: int = 2, seed: int = 0, output_type: str = "latent", **kwargs):
    """Kandinsky 5 output as numpy: 9 frames of 64 x 64 (3 latent frames of 8 x 8) without guidance by default;
    ``kwargs`` override the call's arguments. Default output: the latents."""
    call = dict(height=64, width=64, num_frames=9, num_inference_steps=steps, guidance_scale=1.0,
                max_sequence_length=16, output_type=output_type, generator=torch.Generator().manual_seed(seed))
    frames = pipe(prompt="a fox in snow", **{**call, **kwargs}).frames
    return frames.detach().float().numpy() if torch.is_tensor(frames) else frames


def kandinsky6_sr_pipeline():
    """`Kandinsky6SRPipeline`: a 3-block tiny transformer declared as trained on 32 x 32 tiles, and a
    three-level K-VAE (4x spatial, 4x temporal compression, 4 latent channels)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Kandinsky6SRPipeline, Kandinsky6SRTransformer3DModel
    from diffusers.pipelines.kandinsky6.pipeline_kandinsky6_sr import Kandinsky6SRVAE

    torch.manual_seed(0)
    transformer = Kandinsky6SRTransformer3DModel(
        in_visual_dim=4, out_visual_dim=4, time_dim=16, model_dim=16, ff_dim=32, num_visual_blocks=3,
        axes_dims=(4, 2, 2), nabla_window=(3, 3, 3), tile_sizes=((32, 32),)).eval()
    torch.manual_seed(1)
    vae = Kandinsky6SRVAE(latent_channels=4, encoder_block_out_channels=(4, 8, 8),
                          decoder_block_out_channels=(4, 8, 8), layers_per_block=1).eval()
    pipe = Kandinsky6SRPipeline(transformer=transformer, vae=vae, scheduler=FlowMatchEulerDiscreteScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def kandinsky6_sr_frames(pipe, steps: int = 2, seed: int = 0):
    """A 5-frame 16 x 16 video super-resolved 2x (one 32 x 32 tile, 2 latent frames of 8 x 8 tokens), as numpy."""
    video = torch.rand(1, 5, 3, 16, 16, generator=torch.Generator().manual_seed(123))
    return pipe(video=video, resolution_scale=2, num_inference_steps=steps, output_type="np",
                generator=torch.Generator().manual_seed(seed)).frames


# --- LTX-2 ------------------------------------------------------------------------------------------------------


def gemma3(vocab_size: int, seed: int = 0):
    """A two-layer Gemma 3 of text width 16 (and a one-layer SigLIP tower the pipeline never calls)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    torch.manual_seed(seed)
    config = Gemma3Config(
        text_config=dict(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8, max_position_embeddings=64,
                         sliding_window=16, pad_token_id=0, eos_token_id=1, bos_token_id=2),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8),
        mm_tokens_per_image=4, boi_token_index=3, eoi_token_index=3, image_token_index=3,
    )
    return Gemma3ForConditionalGeneration(config).eval()


def ltx2_components(num_layers: int = 3, seed: int = 0):
    """Every component of `LTX2Pipeline` except the transformer's class choice: a tiny LTX-2 transformer (video
    2 heads x 8, audio 2 heads x 4, `num_layers` blocks), Gemma 3 with its connectors, 2x video VAE, audio VAE of
    8 mel bins and a two-stage vocoder."""
    from diffusers import (AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, FlowMatchEulerDiscreteScheduler,
                           LTX2VideoTransformer3DModel)
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    from repvideo_diffusers.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    text_encoder = gemma3(len(tokenizer), seed)
    torch.manual_seed(seed)
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4, audio_num_attention_heads=2,
        audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=num_layers, caption_channels=16,
        rope_double_precision=False, rope_type="split",
    ).eval()
    connectors = LTX2TextConnectors(
        caption_channels=16, text_proj_in_factor=3, video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=8, video_connector_num_layers=1,
        video_connector_num_learnable_registers=None, audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None, connector_rope_base_seq_len=32, rope_double_precision=False,
        rope_type="split",
    ).eval()
    vae = AutoencoderKLLTX2Video(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), decoder_block_out_channels=(8,),
        layers_per_block=(1,), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,), decoder_inject_noise=(False, False), downsample_type=("spatial",),
        upsample_residual=(False,), upsample_factor=(1,), timestep_conditioning=False, patch_size=1, patch_size_t=1,
        encoder_causal=True, decoder_causal=False,
    ).eval()
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    audio_vae = AutoencoderKLLTX2Audio(base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1,
                                       attn_resolutions=None, in_channels=2, resolution=32, latent_channels=2,
                                       mel_bins=8).eval()
    vocoder = LTX2Vocoder(in_channels=16, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4],
                          upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                          output_sampling_rate=16000).eval()
    return {"scheduler": FlowMatchEulerDiscreteScheduler(), "vae": vae, "audio_vae": audio_vae,
            "text_encoder": text_encoder, "tokenizer": tokenizer, "connectors": connectors,
            "transformer": transformer, "vocoder": vocoder}


def ltx2_pipeline(image_to_video: bool = False):
    """`LTX2Pipeline` (or `LTX2ImageToVideoPipeline`) of `ltx2_components`."""
    from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline

    cls = LTX2ImageToVideoPipeline if image_to_video else LTX2Pipeline
    pipe = cls(**ltx2_components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


# The legacy (LTX-2.0) sampling: plain CFG off, no STG, no modality isolation, no rescale.
LTX2_PLAIN = dict(guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0,
                  audio_guidance_scale=1.0, audio_stg_scale=0.0, audio_modality_scale=1.0,
                  audio_guidance_rescale=0.0, spatio_temporal_guidance_blocks=None, use_cross_timestep=False)


def ltx2_outputs(pipe, steps: int = 2, seed: int = 0, output_type: str = "latent", plain: bool = True, **kwargs):
    """(video, audio) of the tiny LTX-2 pipeline as numpy: 5 frames of 32 x 32 (3 latent frames of 16 x 16) and the
    audio of the same 0.2 s; default: both latents, sampled with `LTX2_PLAIN` (``plain=False``: the pipeline's own
    defaults). ``kwargs`` override the call's arguments."""
    call = {**(LTX2_PLAIN if plain else {}), **kwargs}
    out = pipe(prompt="a fox in snow", height=32, width=32, num_frames=5, frame_rate=25.0, num_inference_steps=steps,
               max_sequence_length=16, output_type=output_type, generator=torch.Generator().manual_seed(seed),
               **call)
    as_numpy = [x.detach().float().numpy() if torch.is_tensor(x) else x for x in (out.frames, out.audio)]
    return tuple(as_numpy)


# --- SANA-WM ----------------------------------------------------------------------------------------------------


def gemma2(vocab_size: int, seed: int = 0):
    """A one-layer Gemma 2 causal LM of width 16 (SANA-WM's text encoder)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    return Gemma2ForCausalLM(Gemma2Config(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=8, max_position_embeddings=1024, pad_token_id=0, eos_token_id=1,
        bos_token_id=2)).eval()


def sana_wm_pipeline():
    """`SanaWMPipeline`: the family's tiny transformer (3 blocks) with a Plücker input for the tiny LTX-2 VAE of
    `ltx2_components` (2x spatial, 2x temporal), a tiny Gemma 2."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaWMPipeline

    from repvideo_diffusers.families import sana_wm
    from repvideo_diffusers.tiny import build_tokenizer

    vae = ltx2_components()["vae"]
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    transformer = sana_wm._tiny_transformer(temporal_stride=vae.temporal_compression_ratio, num_layers=3).eval()
    pipe = SanaWMPipeline(tokenizer=tokenizer, text_encoder=gemma2(len(tokenizer)), vae=vae, transformer=transformer,
                          scheduler=FlowMatchEulerDiscreteScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sana_wm_frames(pipe, steps: int = 2, seed: int = 0, output_type: str = "latent", **kwargs):
    """SANA-WM from a random 32 x 32 first frame, walking forward: 5 frames (3 latent frames of 16 x 16), numpy."""
    from PIL import Image

    image = Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype("uint8"))
    call = dict(action="w-8", intrinsics=[16.0, 16.0, 16.0, 16.0], height=32, width=32, num_frames=5,
                num_inference_steps=steps, guidance_scale=1.0, max_sequence_length=16, output_type=output_type,
                generator=torch.Generator().manual_seed(seed))
    frames = pipe(image, "a fox in snow", **{**call, **kwargs}).frames
    return frames.detach().float().numpy() if torch.is_tensor(frames) else np.asarray(frames)


def sana_wm_refiner_pipeline():
    """`SanaWMLTX2Refiner`: the refiner family's tiny transformer (4 blocks), the LTX-2 text side of
    `ltx2_components` (Gemma 3 + connectors) and its VAE."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SanaWMLTX2Refiner

    from repvideo_diffusers.families import sana_wm_refiner

    components = ltx2_components()
    torch.manual_seed(0)
    transformer = sana_wm_refiner._tiny_transformer().eval()
    pipe = SanaWMLTX2Refiner(transformer=transformer, connectors=components["connectors"],
                             tokenizer=components["tokenizer"], text_encoder=components["text_encoder"],
                             scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0), vae=components["vae"],
                             text_max_sequence_length=16)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sana_wm_refined(pipe, seed: int = 0, output_type: str = "latent"):
    """A random stage-1 latent of 6 frames of 8 x 8 refined in blocks of 2 frames behind a 1-frame sink, with a
    history window of 3 frames (so the history is trimmed), as numpy."""
    latent = torch.randn(1, 4, 6, 8, 8, generator=torch.Generator().manual_seed(123))
    out = pipe(latent, "a fox in snow", fps=16.0, sink_size=1, block_size=2, kv_max_frames=4,
               generator=torch.Generator().manual_seed(seed), output_type=output_type)
    return out.detach().float().numpy() if torch.is_tensor(out) else np.asarray(out)


# --- Cosmos 3 ---------------------------------------------------------------------------------------------------


def chat_tokenizer():
    """Character-level with Qwen-style chat special tokens and a minimal chat template (Cosmos 3 tokenizes the
    prompt through ``apply_chat_template`` and starts generation at ``<|vision_start|>``)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<unk>"]
    pieces = specials + [chr(c) for c in range(32, 127)] + ["\n"]
    tokenizer = Tokenizer(models.WordLevel({piece: i for i, piece in enumerate(pieces)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer.add_special_tokens([AddedToken(s, special=True) for s in specials])
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token="<unk>", chat_template=template)


def cosmos3_pipeline():
    """`Cosmos3OmniPipeline`: the family's tiny transformer widened to the tiny Wan VAE's 16 latent channels (8x
    spatial, 4x temporal), the chat tokenizer above, no safety checker (it needs `cosmos_guardrail` and weights)."""
    from diffusers import Cosmos3OmniPipeline, UniPCMultistepScheduler

    from repvideo_diffusers.families import cosmos3
    from tiny_pipelines import wan_vae

    tokenizer = chat_tokenizer()
    torch.manual_seed(0)
    transformer = cosmos3._tiny_transformer(latent_channel=16, patch_latent_dim=64, vocab_size=len(tokenizer))()
    pipe = Cosmos3OmniPipeline(transformer=transformer.eval(), text_tokenizer=tokenizer, vae=wan_vae(),
                               scheduler=UniPCMultistepScheduler(), enable_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def cosmos3_video(pipe, steps: int = 2, seed: int = 0, output_type: str = "latent", **kwargs):
    """Cosmos 3 output as numpy: 9 frames of 64 x 64 (3 latent frames of 8 x 8, 4 x 4 tokens each), no guidance by
    default; ``kwargs`` override the call's arguments. Default output: the latents."""
    call = dict(num_frames=9, height=64, width=64, num_inference_steps=steps, guidance_scale=1.0,
                output_type=output_type, generator=torch.Generator().manual_seed(seed))
    video = pipe("a fox in snow", **{**call, **kwargs}).video
    return video.detach().float().numpy() if torch.is_tensor(video) else np.asarray(video)

"""A tiny random `Kandinsky6TI2VAPipeline`, built in the test process (no download).

The text side is the Kandinsky 5 one of `tiny_pipelines_kandinsky` (a one-layer Qwen2.5-VL behind a text-only
stand-in of its processor, a one-layer CLIP), with a word-level Qwen tokenizer over the Kandinsky 6 prompt template;
the video VAE is the tiny `AutoencoderKLHunyuanVideo` (8x spatial, 4x temporal, 4 latent channels); the audio side a
tiny `MMAudioVAE` (8 mel bins, 4 latent channels) and `MMAudioVocoder` at 800 Hz, so 9 frames at 24 fps are 10
audio latent frames.
"""

import re

import numpy as np
import torch

from tiny_pipelines_kandinsky import (_QWEN_SPECIALS, _QWEN_SPLIT, WORDS, QwenTextProcessor, clip_text_model,
                                      clip_tokenizer, hunyuan_video_vae, qwen25_vl)

# With one token per piece the Kandinsky 6 template's prefix is 125 tokens; four words split in two (as Qwen's BPE
# splits them) make it exactly the pipeline's `_QWEN_CROP_START` (129), so the crop removes the template and nothing
# else.
_KANDINSKY6_SUBWORDS = r"(?<=scr)en|(?<=post)processing|(?<=dynam)ism|(?<= pr)omt"


def qwen_tokenizer():
    """Word-level over the Kandinsky 6 template's pieces and `WORDS`, Qwen2's split rule and special tokens."""
    from diffusers.pipelines.kandinsky6.pipeline_kandinsky6_ti2va import _PROMPT_TEMPLATE
    from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    split = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_QWEN_SPLIT), behavior="isolated"),
                                     pre_tokenizers.Split(Regex(_KANDINSKY6_SUBWORDS), behavior="isolated")])
    text = _PROMPT_TEMPLATE.format(" ".join(WORDS))
    pieces = set(WORDS + [" " + word for word in WORDS])
    for part in re.split("|".join(map(re.escape, _QWEN_SPECIALS)), text):
        pieces.update(piece for piece, _ in split.pre_tokenize_str(part))
    vocab = [*_QWEN_SPECIALS, "<unk>", *sorted(pieces)]
    tokenizer = Tokenizer(models.WordLevel({piece: i for i, piece in enumerate(vocab)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = split
    tokenizer.add_special_tokens([AddedToken(s, special=True) for s in _QWEN_SPECIALS])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   unk_token="<unk>", padding_side="right", model_max_length=2048)


def mmaudio(seed: int = 2):
    """(`MMAudioVAE`, `MMAudioVocoder`): 8 mel bins, 4 latent channels, 800 Hz, 32 samples per latent frame."""
    from diffusers import MMAudioVAE, MMAudioVocoder

    torch.manual_seed(seed)
    audio_vae = MMAudioVAE(mel_bins=8, latent_channels=4, hidden_channels=8, channel_multipliers=(1, 2),
                           layers_per_block=1, sample_rate=800, n_fft=32, hop_length=16).eval()
    vocoder = MMAudioVocoder(num_mels=8, upsample_initial_channel=16, upsample_rates=(4, 4),
                             upsample_kernel_sizes=(8, 8), resblock_kernel_sizes=(3,),
                             resblock_dilation_sizes=((1, 3, 5),)).eval()
    return audio_vae, vocoder


def kandinsky6_pipeline():
    """`Kandinsky6TI2VAPipeline` around the family's tiny transformer (4 fused blocks, the released architecture
    flags: text-, image- and audio-capable)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, Kandinsky6TI2VAPipeline

    from repvideo_diffusers.families import kandinsky6

    torch.manual_seed(0)
    transformer = kandinsky6._tiny_transformer()().eval()
    qwen, clip = qwen_tokenizer(), clip_tokenizer()
    audio_vae, vocoder = mmaudio()
    pipe = Kandinsky6TI2VAPipeline(
        transformer=transformer, vae=hunyuan_video_vae(), text_encoder=qwen25_vl(len(qwen)),
        tokenizer=QwenTextProcessor(qwen), text_encoder_2=clip_text_model(len(clip)), tokenizer_2=clip,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0), audio_vae=audio_vae, vocoder=vocoder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def kandinsky6_outputs(pipe, steps: int = 2, seed: int = 0, output_type: str = "latent", **kwargs):
    """(video, audio) of the tiny Kandinsky 6 pipeline as numpy (audio ``None`` with ``sample_audio=False``): 9 frames
    of 64 x 64 (3 latent frames of 8 x 8) at 24 fps and their audio, without guidance by default; ``kwargs``
    override the call's arguments. Default output: both latents."""
    call = dict(height=64, width=64, num_frames=9, frame_rate=24.0, num_inference_steps=steps, guidance_scale=1.0,
                max_sequence_length=16, output_type=output_type, generator=torch.Generator().manual_seed(seed))
    out = pipe(prompt="a fox in snow", **{**call, **kwargs})
    as_numpy = [x.detach().float().numpy() if torch.is_tensor(x) else x for x in (out.frames, out.audio)]
    return tuple(np.asarray(x) if isinstance(x, list) else x for x in as_numpy)

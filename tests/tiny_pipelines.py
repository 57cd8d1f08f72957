"""Tiny random pipelines of diffusers, built in the test process (no download): shared by the tests."""

import torch


def t5(seed: int = 0, umt5: bool = False):
    """(tokenizer, T5 or UMT5 text encoder of width 16)."""
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    from repvideo_diffusers.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    config = dict(vocab_size=len(tokenizer), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
                  relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = UMT5EncoderModel(UMT5Config(**config)) if umt5 else T5EncoderModel(T5Config(**config))
    return tokenizer, model.eval()  # a fresh model is in training mode: dropout would make every call differ


def wan_transformer(seed: int, in_channels: int = 16, num_layers: int = 3):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=in_channels,
        out_channels=16, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=num_layers, rope_max_seq_len=32,
    )


def wan_vae(seed: int = 1):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                            temperal_downsample=[False, True, True])


def wan22_pipeline():
    """A Wan 2.2 A14B-style pipeline: two experts, `transformer` for high noise, `transformer_2` for low noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    tokenizer, text_encoder = t5(umt5=True)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=wan_vae(),
                       transformer=wan_transformer(2), transformer_2=wan_transformer(3, num_layers=4),
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), boundary_ratio=0.5)


def wan_frames(pipe, steps: int = 4, seed: int = 0, output_type: str = "latent"):
    """The denoised latents (default: what the transformers produce, before the VAE blurs differences) as numpy."""
    frames = pipe("a fox in snow", num_inference_steps=steps, num_frames=5, height=16, width=16, guidance_scale=1.0,
                  max_sequence_length=16, output_type=output_type, generator=torch.Generator().manual_seed(seed)).frames
    return frames.detach().float().numpy() if torch.is_tensor(frames) else frames

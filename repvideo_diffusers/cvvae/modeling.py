"""``CVVAEModel``: the CV-VAE v1 / v1-1 video VAE (SD 2.1 / SVD latent space, 4 channels) for diffusers.

The video-VAE behaviour it shares with ``CVVAESD3Model`` (chunking, tiling, loading) is ``CVVAEMixin`` in
`repvideo_diffusers.cvvae.mixin`, re-exported here.
"""

from typing import Optional, Tuple

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .mixin import ChunkCallback, CVVAEMixin  # noqa: F401 - their former home
from .vae_v1 import Decoder, Encoder


class CVVAEModel(CVVAEMixin, ModelMixin, ConfigMixin):
    r"""CV-VAE v1 / v1-1: a video VAE whose latent space is Stable Diffusion 2.1's (4 channels), compressing
    time 4x (``1 + 4k`` frames -> ``1 + k`` latent frames) and space 8x (arXiv 2405.20279).

    Config fields and parameter names are the official ones, so the Hub folders ``AILab-CVC/CV-VAE``
    ``vae3d`` and ``vae3d_v1-1`` load unchanged. The attention types that name xformers kernels in the
    official config (``"vanilla-xformers"``, ``"spatial-temporal-xformer"``) run with PyTorch SDPA here, or
    with xformers when it really works on the tensor's device.

    Example:
        >>> import torch
        >>> from repvideo_diffusers.cvvae import CVVAEModel
        >>> vae = CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None)
        >>> video = torch.rand(1, 3, 5, 32, 32) * 2 - 1
        >>> z = vae.encode(video).latent_dist.mode()
        >>> tuple(z.shape), tuple(vae.decode(z).sample.shape)
        ((1, 4, 2, 4, 4), (1, 3, 5, 32, 32))
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        double_z: bool = True,
        z_channels: int = 4,
        in_channels: int = 3,
        out_ch: int = 3,
        ch: int = 128,
        ch_mult: Tuple[int, ...] = (1, 2, 4, 4),
        num_res_blocks: int = 2,
        attn_resolutions: Tuple[int, ...] = (),
        dropout: float = 0.0,
        use_3d_conv: bool = True,
        half_3d: bool = True,
        causal_encoder: bool = True,
        causal_decoder: bool = False,
        encoder_attn_type: str = "vanilla-xformers",
        decoder_attn_type: str = "spatial-temporal-xformer",
        scaling_factor: float = 0.18215,
        force_upcast: bool = True,
        en_de_n_frames_a_time: Optional[int] = 16,
        time_n_compress: Optional[int] = 4,
        spatial_n_compress: Optional[int] = 8,
        tile_spatial_size: Optional[int] = 576,
        num_video_frames: Optional[int] = None,
        tile_overlap_ratio: Optional[float] = 0.2222,
        reshape_z_dim_to_4: bool = False,
        reshape_x_dim_to_4: bool = False,
    ):
        super().__init__()
        common = dict(
            ch=ch,
            ch_mult=tuple(ch_mult),
            num_res_blocks=num_res_blocks,
            attn_resolutions=tuple(attn_resolutions),
            dropout=dropout,
            z_channels=z_channels,
            use_3d_conv=use_3d_conv,
            half_3d=half_3d,
        )
        self.encoder = Encoder(
            in_channels=in_channels, double_z=double_z, attn_type=encoder_attn_type, causal=causal_encoder, **common
        )
        self.decoder = Decoder(out_ch=out_ch, attn_type=decoder_attn_type, causal=causal_decoder, **common)
        self._init_runtime(
            en_de_n_frames_a_time, tile_spatial_size, tile_overlap_ratio, num_video_frames, len(ch_mult)
        )

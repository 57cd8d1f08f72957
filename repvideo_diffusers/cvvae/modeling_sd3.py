"""``CVVAESD3Model``: the CV-VAE video VAE in Stable Diffusion 3's latent space (16 channels)."""

from typing import Optional, Sequence

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from .mixin import CVVAEMixin
from .vae_sd3 import Decoder3D, Encoder3D


class CVVAESD3Model(CVVAEMixin, ModelMixin, ConfigMixin):
    r"""CV-VAE for SD3 / SD3.5: 16 latent channels, time compressed 4x and space 8x (arXiv 2405.20279).

    Config fields and parameter names are the official ones (Hub folder ``AILab-CVC/CV-VAE`` ``vae3d_sd3``).
    SD3 latents are normally used as ``(z - shift_factor) * scaling_factor`` with the SD3 image VAE's
    constants (1.5305, 0.0609); this class, like the official one, leaves that to the pipeline.

    Example:
        >>> import torch
        >>> from repvideo_diffusers.cvvae import CVVAESD3Model
        >>> vae = CVVAESD3Model(block_out_channels=(32, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
        ...                     tile_spatial_size=None)
        >>> vae.encode(torch.zeros(1, 3, 9, 32, 32)).latent_dist.mean.shape
        torch.Size([1, 16, 3, 4, 4])
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 16,
        down_block_types: Sequence[str] = ("DownEncoderBlock3D",) * 4,
        up_block_types: Sequence[str] = ("UpDecoderBlock3D",) * 4,
        block_out_channels: Sequence[int] = (128, 256, 512, 512),
        layers_per_block: int = 2,
        norm_num_groups: int = 32,
        act_fn: str = "silu",
        double_z: bool = True,
        mid_block_add_attention: bool = True,
        causal_encoder: bool = True,
        causal_decoder: bool = False,
        half_3d: bool = True,
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
        shared = dict(
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            mid_block_add_attention=mid_block_add_attention,
            half_3d=half_3d,
        )
        self.encoder = Encoder3D(
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=tuple(down_block_types),
            double_z=double_z,
            causal=causal_encoder,
            **shared,
        )
        self.decoder = Decoder3D(
            in_channels=out_channels,
            out_channels=in_channels,
            up_block_types=tuple(up_block_types),
            causal=causal_decoder,
            **shared,
        )
        self._init_runtime(
            en_de_n_frames_a_time,
            tile_spatial_size,
            tile_overlap_ratio,
            num_video_frames,
            len(block_out_channels),
        )

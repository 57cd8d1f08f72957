"""``CVVAEMixin``: the video-VAE behaviour shared by ``CVVAEModel`` and ``CVVAESD3Model``: ``1 + 4k`` frame
checks, temporal chunking (the official ``en_de_n_frames_a_time``), spatial tiling with overlap blending, and
loading that fails loudly on a checkpoint of the other variant.
"""

import logging
import math
from typing import Callable, List, Optional, Tuple, Union

import torch
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.utils.accelerate_utils import apply_forward_hook

from .tiling import TileAccumulator, tile_spans

logger = logging.getLogger(__name__)

ChunkCallback = Optional[Callable[[], None]]


class CVVAEMixin:
    """Encode/decode logic shared by the CV-VAE models (expects ``self.encoder``, ``self.decoder``, config).

    Runtime switches, none of which change the weights:

    - temporal chunking: ``enable_chunking(frames)`` / ``disable_chunking()`` (config ``en_de_n_frames_a_time``)
    - spatial tiling: ``enable_tiling(tile_size, overlap_ratio)`` / ``disable_tiling()`` (config
      ``tile_spatial_size`` / ``tile_overlap_ratio``)
    """

    def _init_runtime(
        self, en_de_n_frames_a_time, tile_spatial_size, tile_overlap_ratio, num_video_frames, num_levels
    ):
        # Time is halved at levels 0, 2, ... except the last; space at every level but the last.
        time_compress = 2 ** len([i for i in range(num_levels - 1) if i % 2 == 0])
        spatial_compress = 2 ** (num_levels - 1)
        for field, value, actual in (
            ("time_n_compress", self.config.time_n_compress, time_compress),
            ("spatial_n_compress", self.config.spatial_n_compress, spatial_compress),
        ):
            if value is not None and value != actual:
                raise ValueError(
                    f"{field}={value} does not match the architecture: {num_levels} levels compress by "
                    f"{actual}. Set {field}={actual} or use 4 levels (the CV-VAE layout)."
                )
        self.time_n_compress = time_compress
        self.spatial_n_compress = spatial_compress
        if en_de_n_frames_a_time:
            self.enable_chunking(en_de_n_frames_a_time)
        else:
            self.disable_chunking()
        self.tile_overlap_ratio = tile_overlap_ratio if tile_overlap_ratio is not None else 0.2222
        if tile_spatial_size:
            self.enable_tiling(tile_spatial_size, self.tile_overlap_ratio)
        else:
            self.disable_tiling()
        self.num_video_frames = num_video_frames
        self.num_latent_frames = None
        if num_video_frames is not None:
            self.num_latent_frames = 1 + (num_video_frames - 1) // self.time_n_compress

    # ----------------------------------------------------------------------------------------- switches
    def enable_chunking(self, frames: int = 16) -> None:
        """Encode ``frames`` (+1 shared) frames and decode ``frames / 4`` (+1) latent frames at a time.

        Consecutive chunks share one boundary frame, whose duplicate output is dropped, exactly as in the
        official ``en_de_n_frames_a_time``; the causal encoder makes the result close to, not equal to, the
        unchunked one (each chunk restarts its causal context).

        Example:
            >>> from repvideo_diffusers.cvvae import CVVAEModel
            >>> vae = CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None)
            >>> vae.enable_chunking(8)
            >>> vae.encode_n_frames_a_time, vae.decode_n_frames_a_time
            (8, 2)
        """
        if frames <= 0 or frames % self.time_n_compress != 0:
            raise ValueError(
                f"Chunk length must be a positive multiple of {self.time_n_compress} frames (the temporal "
                f"compression); found {frames}. Use e.g. {max(self.time_n_compress, frames // 4 * 4 or 4)}."
            )
        self.encode_n_frames_a_time = frames
        self.decode_n_frames_a_time = frames // self.time_n_compress

    def disable_chunking(self) -> None:
        """Process all frames at once."""
        self.encode_n_frames_a_time = None
        self.decode_n_frames_a_time = None

    def enable_tiling(self, tile_size: int = 576, overlap_ratio: Optional[float] = None) -> None:
        """Encode/decode frames in ``tile_size`` pixel tiles (``tile_size / 8`` latent tiles) with blended overlaps.

        Example:
            >>> from repvideo_diffusers.cvvae import CVVAEModel
            >>> vae = CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None)
            >>> vae.enable_tiling(256, 0.25)
            >>> vae.tile_sample_size, vae.tile_latent_size, vae.tile_latent_overlap
            (256, 32, 8)
        """
        s = self.spatial_n_compress
        if tile_size < 2 * s or tile_size % s != 0:
            raise ValueError(
                f"Tile size must be a multiple of {s} pixels (the spatial compression) and at least {2 * s}; "
                f"found {tile_size}. Use e.g. {max(2 * s, round(tile_size / s) * s)}."
            )
        ratio = self.tile_overlap_ratio if overlap_ratio is None else overlap_ratio
        if not 0 <= ratio < 1:
            raise ValueError(f"Tile overlap ratio must be in [0, 1); found {ratio}.")
        self.use_tiling = True
        self.tile_overlap_ratio = ratio
        self.tile_sample_size = tile_size
        self.tile_latent_size = tile_size // s
        self.tile_latent_overlap = min(round(self.tile_latent_size * ratio), self.tile_latent_size - 1)

    def disable_tiling(self) -> None:
        """Process whole frames."""
        self.use_tiling = False
        self.tile_sample_size = self.tile_latent_size = self.tile_latent_overlap = None

    # ----------------------------------------------------------------------------------------- helpers
    def _check_frames(self, num_frames: int) -> None:
        n = self.time_n_compress
        if (num_frames - 1) % n != 0:
            shorter = 1 + (num_frames - 1) // n * n
            raise ValueError(
                f"{type(self).__name__} encodes 1 + {n}k frames (1, {1 + n}, {1 + 2 * n}, {1 + 4 * n}, ...); found "
                f"{num_frames} frames. Trim the video to {shorter} frames or pad it to {shorter + n}."
            )

    @staticmethod
    def _chunk_slices(length: int, stride: Optional[int]) -> List[slice]:
        # Chunks share their boundary frame: [0, s], [s, 2s], ... as in the official implementation.
        if stride is None or length <= stride + 1:
            return [slice(0, length)]
        rounds = math.ceil((length - 1) / stride)
        return [slice(i * stride, (i + 1) * stride + 1) for i in range(rounds)]

    def num_chunks(self, num_frames: int) -> Tuple[int, int]:
        """``(encode chunks, decode chunks)`` for a ``num_frames`` video: handy for progress bars.

        Example:
            >>> from repvideo_diffusers.cvvae import CVVAEModel
            >>> vae = CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, en_de_n_frames_a_time=8)
            >>> vae.num_chunks(17)
            (2, 2)
        """
        latent_frames = 1 + (num_frames - 1) // self.time_n_compress
        return (
            len(self._chunk_slices(num_frames, self.encode_n_frames_a_time)),
            len(self._chunk_slices(latent_frames, self.decode_n_frames_a_time)),
        )

    def _tiled_encode(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if not self.use_tiling or (height <= self.tile_sample_size and width <= self.tile_sample_size):
            return self.encoder(x)
        s = self.spatial_n_compress
        tile, overlap = self.tile_sample_size, self.tile_latent_overlap * s
        rows, cols = tile_spans(height, tile, overlap, s), tile_spans(width, tile, overlap, s)
        # Latent tiles are tiny (8x smaller per side), so keep them all and blend once their sizes are known.
        tiles = [[self.encoder(x[..., r0:r1, c0:c1]) for (c0, c1) in cols] for (r0, r1) in rows]
        latent_rows = [(r0 // s, r0 // s + tiles[i][0].shape[-2]) for i, (r0, _) in enumerate(rows)]
        latent_cols = [(c0 // s, c0 // s + tiles[0][j].shape[-1]) for j, (c0, _) in enumerate(cols)]
        canvas = TileAccumulator(latent_rows, latent_cols)
        for i, row in enumerate(tiles):
            for j, tile_latent in enumerate(row):
                canvas.add(i, j, tile_latent)
        return canvas.result(x.dtype)

    def _tiled_decode(self, z: torch.Tensor) -> torch.Tensor:
        height, width = z.shape[-2:]
        if not self.use_tiling or (height <= self.tile_latent_size and width <= self.tile_latent_size):
            return self.decoder(z)
        s = self.spatial_n_compress
        rows = tile_spans(height, self.tile_latent_size, self.tile_latent_overlap)
        cols = tile_spans(width, self.tile_latent_size, self.tile_latent_overlap)
        canvas = TileAccumulator([(a * s, b * s) for a, b in rows], [(a * s, b * s) for a, b in cols])
        # Decoded tiles are large: blend each into the canvas at once, so memory stays at one tile + canvas.
        for i, (r0, r1) in enumerate(rows):
            for j, (c0, c1) in enumerate(cols):
                canvas.add(i, j, self.decoder(z[..., r0:r1, c0:c1]))
        return canvas.result(z.dtype)

    # ----------------------------------------------------------------------------------------- API
    @apply_forward_hook
    def encode(
        self, x: torch.Tensor, return_dict: bool = True, on_chunk: ChunkCallback = None
    ) -> Union[AutoencoderKLOutput, Tuple[DiagonalGaussianDistribution]]:
        """Encode a video ``(batch, channels, 1 + 4k, height, width)`` in ``[-1, 1]`` into its posterior.

        A 4D ``(batch, channels, height, width)`` input is a batch of images (one frame each), unless the
        config sets ``num_video_frames``, in which case it is ``(batch * frames, ...)``.

        Example:
            >>> import torch
            >>> from repvideo_diffusers.cvvae import CVVAEModel
            >>> vae = CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None)
            >>> posterior = vae.encode(torch.rand(1, 3, 9, 32, 32) * 2 - 1).latent_dist
            >>> posterior.mean.shape
            torch.Size([1, 4, 3, 4, 4])
        """
        if x.dim() == 4:
            if self.num_video_frames is not None:
                bt, c, h, w = x.shape
                x = x.reshape(bt // self.num_video_frames, self.num_video_frames, c, h, w).transpose(1, 2)
            else:
                x = x.unsqueeze(2)
        if x.dim() != 5:
            raise ValueError(
                f"Expected a video (batch, channels, frames, height, width) or images (batch, channels, height, "
                f"width); found a tensor of shape {tuple(x.shape)}."
            )
        self._check_frames(x.shape[2])
        pieces = []
        for index, part in enumerate(self._chunk_slices(x.shape[2], self.encode_n_frames_a_time)):
            moments = self._tiled_encode(x[:, :, part])
            # The first latent of a later chunk encodes the shared boundary frame already encoded before.
            pieces.append(moments if index == 0 else moments[:, :, 1:])
            if on_chunk is not None:
                on_chunk()
        posterior = DiagonalGaussianDistribution(torch.cat(pieces, dim=2))
        if not return_dict:
            return (posterior,)
        return AutoencoderKLOutput(latent_dist=posterior)

    @apply_forward_hook
    def decode(
        self,
        z: torch.Tensor,
        num_frames: Optional[int] = None,
        return_dict: bool = True,
        on_chunk: ChunkCallback = None,
    ) -> Union[DecoderOutput, Tuple[torch.Tensor]]:
        """Decode latents ``(batch, z_channels, 1 + k, h, w)`` into a video ``(batch, 3, 1 + 4k, 8h, 8w)``.

        ``num_frames`` (latent frames) lets a 4D ``(batch * frames, ...)`` latent be decoded as videos.

        Example:
            >>> import torch
            >>> from repvideo_diffusers.cvvae import CVVAEModel
            >>> vae = CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None)
            >>> vae.decode(torch.randn(1, 4, 3, 4, 4)).sample.shape
            torch.Size([1, 3, 9, 32, 32])
        """
        if z.dim() == 4:
            frames = num_frames or self.num_latent_frames
            if frames is not None:
                bt, c, h, w = z.shape
                z = z.reshape(bt // frames, frames, c, h, w).transpose(1, 2)
            else:
                z = z.unsqueeze(2)
        if z.dim() != 5:
            raise ValueError(
                f"Expected latents (batch, channels, frames, height, width); found shape {tuple(z.shape)}."
            )
        pieces = []
        for index, part in enumerate(self._chunk_slices(z.shape[2], self.decode_n_frames_a_time)):
            video = self._tiled_decode(z[:, :, part])
            pieces.append(video if index == 0 else video[:, :, 1:])
            if on_chunk is not None:
                on_chunk()
        x = torch.cat(pieces, dim=2)
        if self.config.reshape_x_dim_to_4:
            x = x.transpose(1, 2).flatten(0, 1)
        if not return_dict:
            return (x,)
        return DecoderOutput(sample=x)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: Optional[torch.Generator] = None,
        num_frames: Optional[int] = None,
    ) -> Union[DecoderOutput, Tuple[torch.Tensor]]:
        """Reconstruct ``sample``: encode, take the posterior mode (or a sample), decode.

        Example:
            >>> import torch
            >>> from repvideo_diffusers.cvvae import CVVAEModel
            >>> vae = CVVAEModel(ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1, tile_spatial_size=None)
            >>> vae(torch.zeros(1, 3, 5, 32, 32)).sample.shape
            torch.Size([1, 3, 5, 32, 32])
        """
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        decoded = self.decode(z, num_frames=num_frames).sample
        if not return_dict:
            return (decoded,)
        return DecoderOutput(sample=decoded)

    # ----------------------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a CV-VAE folder (``config.json`` + ``diffusion_pytorch_model.safetensors``), failing loudly
        when the checkpoint's parameter names or shapes do not match this class.

        Example (official weights; needs the Hub or a local copy)::

            vae = CVVAEModel.from_pretrained("AILab-CVC/CV-VAE", subfolder="vae3d")
        """
        want_info = kwargs.pop("output_loading_info", False)
        try:
            config = cls.load_config(pretrained_model_name_or_path, subfolder=kwargs.get("subfolder"))
        except Exception:  # let from_pretrained report unreadable/missing configs in its own words
            config = {}
        saved_class = config.get("_class_name", cls.__name__)
        if saved_class != cls.__name__ and saved_class in ("CVVAEModel", "CVVAESD3Model"):
            raise ValueError(
                f"{pretrained_model_name_or_path!s} holds a {saved_class} checkpoint, which does not fit "
                f"{cls.__name__}. Load it with {saved_class}.from_pretrained or repvideo_diffusers.cvvae.load_cvvae."
            )
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except ValueError as error:
            if "expected shape" not in str(error):
                raise
            raise ValueError(f"The weights in {pretrained_model_name_or_path!s} do not fit {cls.__name__}: {error}") from error
        problems = []
        if info.get("missing_keys"):
            problems.append(f"missing from the checkpoint: {sorted(info['missing_keys'])}")
        if info.get("unexpected_keys"):
            problems.append(f"not expected by {cls.__name__}: {sorted(info['unexpected_keys'])}")
        if info.get("mismatched_keys"):
            problems.append(f"shape mismatch: {info['mismatched_keys']}")
        if problems:
            raise ValueError(
                f"The weights in {pretrained_model_name_or_path!s} do not fit {cls.__name__}; "
                + "; ".join(problems)
                + ". Check the folder (CV-VAE v1/v1-1 load with CVVAEModel, vae3d_sd3 with CVVAESD3Model)."
            )
        return (model, info) if want_info else model

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` whose error names the missing and unexpected keys up front."""
        if strict:
            own = set(self.state_dict().keys())
            missing, unexpected = sorted(own - set(state_dict)), sorted(set(state_dict) - own)
            if missing or unexpected:
                raise ValueError(
                    f"State dict does not fit {type(self).__name__}: missing keys {missing}, unexpected keys "
                    f"{unexpected}. Was it saved from a different CV-VAE variant or renamed?"
                )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

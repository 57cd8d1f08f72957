"""The latent-space regularisation of CV-VAE (arXiv 2405.20279, Sec. 3).

The frozen *image* VAE's decoder decodes every latent frame of the video VAE on its own, and that decoding is
pulled toward the input frame(s) the latent frame stands for. Latent frame 0 stands for input frame 0 (the
causal encoder sees it alone); latent frame ``j >= 1`` stands for the group of ``time_compress`` input frames
``4j - 3 ... 4j``. Which target is used for a group is the "frame choice":

- ``"slice"``: the last frame of the group, i.e. every 4th input frame ``0, 4, 8, ...``
- ``"mean"``: the mean of the group
- ``"random"``: one random frame of the group (the official choice for SD3)

Because the image decoder must explain the video latents, the video VAE's latent space stays the image
VAE's, so image/video diffusion models trained on that space can use it.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

FRAME_CHOICES = ("slice", "mean", "random")
LOSSES = ("l1", "l2")


def regularization_targets(
    video: torch.Tensor,
    frame_choice: str = "slice",
    time_compress: int = 4,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The input frames each latent frame is pulled toward: ``(batch, channels, 1 + k, height, width)``.

    Returns ``(targets, indices)``; ``indices`` are the chosen input frames (``None`` for ``"mean"``).

    Example:
        >>> import torch
        >>> video = torch.arange(9.0).view(1, 1, 9, 1, 1)  # frame t holds the value t
        >>> regularization_targets(video, "slice")[0].flatten().tolist()
        [0.0, 4.0, 8.0]
        >>> regularization_targets(video, "mean")[0].flatten().tolist()
        [0.0, 2.5, 6.5]
    """
    if frame_choice not in FRAME_CHOICES:
        raise ValueError(f"frame_choice must be one of {FRAME_CHOICES}; found {frame_choice!r}.")
    b, c, t, h, w = video.shape
    if (t - 1) % time_compress != 0:
        raise ValueError(
            f"Latent regularisation needs 1 + {time_compress}k frames; found {t}. Trim the clip to "
            f"{1 + (t - 1) // time_compress * time_compress} frames."
        )
    groups = (t - 1) // time_compress
    if frame_choice == "mean":
        rest = video[:, :, 1:].reshape(b, c, groups, time_compress, h, w).mean(dim=3)
        return torch.cat([video[:, :, :1], rest], dim=2), None
    if frame_choice == "slice":
        indices = torch.arange(0, t, time_compress)
    else:
        offsets = torch.randint(1, time_compress + 1, (groups,), generator=generator)
        indices = torch.cat([torch.zeros(1, dtype=torch.long), offsets + torch.arange(groups) * time_compress])
    return video[:, :, indices.to(video.device)], indices


def decode_frames_with_image_vae(latents: torch.Tensor, image_vae, decode_batch_size: Optional[int] = None):
    """Decode ``(b, c, f, h, w)`` latents frame by frame with a diffusers ``AutoencoderKL``: ``(b, 3, f, H, W)``.

    Example::

        frames = decode_frames_with_image_vae(z, AutoencoderKL.from_pretrained(path, subfolder="vae"))
    """
    b, c, f, h, w = latents.shape
    flat = latents.transpose(1, 2).reshape(b * f, c, h, w)
    dtype = next(image_vae.parameters()).dtype
    step = decode_batch_size or flat.shape[0]
    # Decoding a few frames at a time bounds the image decoder's activation memory.
    decoded = torch.cat([image_vae.decode(flat[i : i + step].to(dtype)).sample for i in range(0, flat.shape[0], step)])
    decoded = decoded.float()
    return decoded.reshape(b, f, *decoded.shape[1:]).transpose(1, 2)


def latent_regularization_loss(
    latents: torch.Tensor,
    video: torch.Tensor,
    image_vae,
    frame_choice: str = "slice",
    loss: str = "l1",
    time_compress: int = 4,
    generator: Optional[torch.Generator] = None,
    decode_batch_size: Optional[int] = None,
) -> torch.Tensor:
    """CV-VAE latent regularisation: ``mean |D_img(z_j) - target_j|`` over latent frames ``j``.

    Args:
        latents: video-VAE latents ``(batch, z_channels, 1 + k, h, w)`` (raw posterior samples, unscaled).
        video: the encoded input ``(batch, 3, 1 + 4k, 8h, 8w)`` in ``[-1, 1]``.
        image_vae: a diffusers ``AutoencoderKL`` with the same latent space (e.g. SD 2.1's for ``CVVAEModel``).
            It is frozen here (``requires_grad_(False)``): gradients reach the video VAE through the latents
            only, never the image decoder's weights.
        frame_choice: ``"slice"``, ``"mean"`` or ``"random"`` (see ``regularization_targets``).
        loss: ``"l1"`` (the paper's default) or ``"l2"``.

    Example:
        >>> import torch
        >>> from diffusers import AutoencoderKL
        >>> image_vae = AutoencoderKL(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
        ...                           up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
        >>> z = torch.randn(1, 4, 3, 4, 4, requires_grad=True)
        >>> video = torch.rand(1, 3, 9, 32, 32) * 2 - 1
        >>> latent_regularization_loss(z, video, image_vae).backward()
        >>> z.grad is not None, image_vae.decoder.conv_out.weight.grad is None
        (True, True)
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}; found {loss!r}.")
    expected = 1 + (video.shape[2] - 1) // time_compress
    if latents.shape[2] != expected:
        raise ValueError(
            f"{video.shape[2]} input frames map to {expected} latent frames; found {latents.shape[2]} latent frames."
        )
    image_vae.requires_grad_(False)
    targets, _ = regularization_targets(video, frame_choice, time_compress, generator)
    decoded = decode_frames_with_image_vae(latents, image_vae, decode_batch_size)
    if decoded.shape != targets.shape:
        raise ValueError(
            f"The image VAE decodes {tuple(decoded.shape)} but the targets are {tuple(targets.shape)}; "
            "is it the image VAE this video VAE is compatible with?"
        )
    targets = targets.to(decoded)
    return F.l1_loss(decoded, targets) if loss == "l1" else F.mse_loss(decoded, targets)

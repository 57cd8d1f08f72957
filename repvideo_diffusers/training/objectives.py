"""Training objectives read off each pipeline's own scheduler: one table, keyed by scheduler class.

* DDPM/DDIM family (CogVideoX's ``CogVideoXDDIMScheduler`` / ``CogVideoXDPMScheduler``, plain DDIM/DPM-Solver):
  integer timesteps drawn uniformly from ``[0, num_train_timesteps)`` as CogVideoX was trained,
  ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise`` (``scheduler.add_noise``), and the target the scheduler's
  ``prediction_type`` names: ``v = sqrt(a_t) noise - sqrt(1 - a_t) x0`` (``scheduler.get_velocity``) or ``noise``.
* Flow matching (``FlowMatchEulerDiscreteScheduler``: Wan, HunyuanVideo, LTX-Video, Mochi): sigmas drawn
  logit-normally (SD3-style, ``diffusers.training_utils.compute_density_for_timestep_sampling``) and moved by the
  scheduler's ``shift``, ``x_t = (1 - s) x0 + s noise``, target ``noise - x0``; the transformer sees ``1000 s``
  (with ``invert_sigmas``, Mochi's config, it sees ``1000 (1 - s)`` and predicts ``x0 - noise``). Schedulers with
  ``use_dynamic_shifting`` (LTX-Video) shift by sequence length at inference; training uses their static ``shift``.

Both work on any latent layout, because everything is element-wise over the batch dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


@dataclass
class NoisedBatch:
    """Inputs and target of one training step."""

    noisy: torch.Tensor  # what the transformer sees as hidden_states
    timestep: torch.Tensor  # what the transformer sees as timestep
    target: torch.Tensor  # what its output is compared with (MSE)


class Objective:
    """Turns clean latents ``x0`` and noise into (noisy latents, model timestep, regression target)."""

    name = "objective"

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def sample(self, x0: torch.Tensor, generator: torch.Generator) -> NoisedBatch:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.mse_loss(prediction.float(), target.float())

    def describe(self) -> str:
        return self.name


class DiffusionObjective(Objective):
    """DDPM-style noising with uniform integer timesteps; v-prediction or epsilon target from the config."""

    def __init__(self, scheduler):
        super().__init__(scheduler)
        self.prediction_type = scheduler.config.prediction_type
        if self.prediction_type not in ("v_prediction", "epsilon"):
            raise ValueError(
                f"repvideo train supports prediction_type 'v_prediction' or 'epsilon' for "
                f"{type(scheduler).__name__}, found {self.prediction_type!r} in the scheduler config. "
                "Use a pipeline whose scheduler predicts v or epsilon."
            )
        self.name = f"diffusion ({self.prediction_type}, uniform t in [0, {scheduler.config.num_train_timesteps}))"

    def sample(self, x0, generator):
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0)
        steps = self.scheduler.config.num_train_timesteps
        timestep = torch.randint(0, steps, (x0.shape[0],), generator=generator).to(x0.device)
        noisy = self.scheduler.add_noise(x0, noise, timestep)
        target = self.scheduler.get_velocity(x0, noise, timestep) if self.prediction_type == "v_prediction" else noise
        return NoisedBatch(noisy, timestep, target)


class FlowMatchingObjective(Objective):
    """Rectified flow: ``x_t = (1 - s) x0 + s noise``, target ``noise - x0``, logit-normal shifted sigmas."""

    def __init__(self, scheduler, logit_mean: float = 0.0, logit_std: float = 1.0):
        super().__init__(scheduler)
        self.shift = float(getattr(scheduler.config, "shift", 1.0) or 1.0)
        self.logit_mean, self.logit_std = logit_mean, logit_std
        self.name = f"flow matching (target noise - x0, logit-normal sigmas, shift {self.shift:g})"

    def sample(self, x0, generator):
        from diffusers.training_utils import compute_density_for_timestep_sampling

        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0)
        u = compute_density_for_timestep_sampling(
            "logit_normal", x0.shape[0], logit_mean=self.logit_mean, logit_std=self.logit_std, generator=generator
        )
        # The same shift the scheduler applies at inference (SD3 / Wan / Hunyuan convention).
        sigma = self.shift * u / (1 + (self.shift - 1) * u)
        s = _expand(sigma, x0).to(x0.device)
        noisy = (1 - s) * x0 + s * noise
        num_train = getattr(self.scheduler.config, "num_train_timesteps", 1000)
        if getattr(self.scheduler.config, "invert_sigmas", False):
            # Mochi's convention: time runs the other way, so the model sees 1 - s and predicts x0 - noise.
            return NoisedBatch(noisy, ((1 - sigma) * num_train).to(x0.device), x0 - noise)
        return NoisedBatch(noisy, (sigma * num_train).to(x0.device), noise - x0)


# Scheduler class name -> objective. Subclasses are found through the MRO.
OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "CogVideoXDDIMScheduler": DiffusionObjective,
    "CogVideoXDPMScheduler": DiffusionObjective,
    "DDIMScheduler": DiffusionObjective,
    "DDPMScheduler": DiffusionObjective,
    "DPMSolverMultistepScheduler": DiffusionObjective,
    "FlowMatchEulerDiscreteScheduler": FlowMatchingObjective,
}


def objective_for(scheduler) -> Objective:
    """The training objective matching a pipeline's scheduler.

    Example:
        ```python
        >>> import torch
        >>> from diffusers import FlowMatchEulerDiscreteScheduler
        >>> from repvideo_diffusers.training.objectives import objective_for
        >>> objective = objective_for(FlowMatchEulerDiscreteScheduler(shift=3.0))
        >>> objective.describe()
        'flow matching (target noise - x0, logit-normal sigmas, shift 3)'
        >>> batch = objective.sample(torch.zeros(2, 4, 3, 8, 8), torch.Generator().manual_seed(0))

        ```
    """
    config = getattr(scheduler, "config", {})
    if getattr(config, "use_flow_sigmas", False) or config.get("prediction_type") == "flow_prediction":
        # Wan's UniPC / DPM-Solver are flow-matching samplers in disguise.
        objective = FlowMatchingObjective(scheduler)
        objective.shift = float(config.get("flow_shift", 1.0) or 1.0)
        objective.name = f"flow matching (target noise - x0, logit-normal sigmas, shift {objective.shift:g})"
        return objective
    for cls in type(scheduler).__mro__:
        if cls.__name__ in OBJECTIVES:
            return OBJECTIVES[cls.__name__](scheduler)
    known = ", ".join(OBJECTIVES)
    raise ValueError(
        f"repvideo train has no training objective for scheduler {type(scheduler).__name__}. Known schedulers: "
        f"{known}, or any scheduler configured for flow prediction. Load the pipeline with one of them (e.g. `pipe.scheduler = CogVideoXDDIMScheduler.from_config("
        "pipe.scheduler.config)`)."
    )

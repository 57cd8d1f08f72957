"""Specifications of the training objectives: read off the scheduler, checked against the closed-form equations."""

import pytest
import torch
from diffusers import (
    CogVideoXDDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from repvideo_diffusers import RepVideoConfig, apply_repvideo
from repvideo_diffusers.testing import TINY_MODELS
from repvideo_diffusers.training import objective_for, training_loss
from repvideo_diffusers.training.objectives import DiffusionObjective, FlowMatchingObjective


def _cogvideox_scheduler(prediction_type="v_prediction"):
    return CogVideoXDDIMScheduler(beta_schedule="scaled_linear", prediction_type=prediction_type,
                                  rescale_betas_zero_snr=True, timestep_spacing="trailing", snr_shift_scale=1.0)


def test_v_prediction_noises_and_targets_match_the_closed_form_and_timesteps_are_uniform():
    scheduler = _cogvideox_scheduler()
    objective = objective_for(scheduler)
    assert isinstance(objective, DiffusionObjective) and objective.prediction_type == "v_prediction"
    x0 = torch.randn(4000, 3)
    batch = objective.sample(x0, torch.Generator().manual_seed(0))
    a = scheduler.alphas_cumprod[batch.timestep].unsqueeze(1).float()
    # v = sqrt(a) noise - sqrt(1 - a) x0 and x_t = sqrt(a) x0 + sqrt(1 - a) noise give x0 = sqrt(a) x_t - sqrt(1-a) v.
    assert torch.allclose(a.sqrt() * batch.noisy - (1 - a).sqrt() * batch.target, x0, atol=1e-4)
    t = batch.timestep.float()
    assert t.min() >= 0 and t.max() <= 999 and abs(t.mean().item() - 499.5) < 15  # uniform over 1000 steps


def test_epsilon_target_is_the_noise_added():
    scheduler = _cogvideox_scheduler("epsilon")
    x0 = torch.randn(64, 5)
    batch = objective_for(scheduler).sample(x0, torch.Generator().manual_seed(1))
    a = scheduler.alphas_cumprod[batch.timestep].unsqueeze(1).float()
    assert torch.allclose(a.sqrt() * x0 + (1 - a).sqrt() * batch.target, batch.noisy, atol=1e-5)


def test_flow_matching_interpolates_linearly_with_shifted_logit_normal_sigmas():
    objective = objective_for(FlowMatchEulerDiscreteScheduler(shift=3.0))
    assert isinstance(objective, FlowMatchingObjective)
    x0 = torch.randn(4000, 3)
    batch = objective.sample(x0, torch.Generator().manual_seed(2))
    sigma = batch.timestep / 1000
    # x_t = (1 - s) x0 + s noise and target = noise - x0  =>  x_t = x0 + s target.
    assert torch.allclose(x0 + sigma[:, None] * batch.target, batch.noisy, atol=1e-5)
    # Logit-normal(0, 1) has median 0.5; shift 3 maps it to 3 * 0.5 / (1 + 2 * 0.5) = 0.75.
    assert abs(sigma.median().item() - 0.75) < 0.02


def test_inverted_sigmas_mochi_convention_reverses_time_and_target():
    objective = objective_for(FlowMatchEulerDiscreteScheduler(invert_sigmas=True))
    x0 = torch.randn(256, 3)
    batch = objective.sample(x0, torch.Generator().manual_seed(3))
    sigma = 1 - batch.timestep / 1000
    assert torch.allclose(x0 - sigma[:, None] * batch.target, batch.noisy, atol=1e-5)


def test_wan_unipc_configured_for_flow_prediction_trains_with_flow_matching_and_its_flow_shift():
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    objective = objective_for(scheduler)
    assert isinstance(objective, FlowMatchingObjective) and objective.shift == 5.0


def test_unknown_scheduler_is_a_clear_error_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"no training objective for scheduler EulerDiscreteScheduler.*CogVideoXDDIM"):
        objective_for(EulerDiscreteScheduler())


def test_one_flow_matching_step_on_a_tiny_wan_transformer_moves_only_the_gates():
    transformer, inputs = TINY_MODELS["Wan"].build(seed=0)
    gates = apply_repvideo(transformer, RepVideoConfig(window=2, gate_init=0.5))
    transformer.requires_grad_(False)
    gates.requires_grad_(True)
    before = {n: p.detach().clone() for n, p in transformer.named_parameters()}
    optimizer = torch.optim.AdamW([gates.gate], lr=1e-2, weight_decay=0.0)
    objective = objective_for(FlowMatchEulerDiscreteScheduler(shift=3.0))
    loss = training_loss(
        transformer, objective, inputs["hidden_states"],
        lambda noisy, t: {**inputs, "hidden_states": noisy, "timestep": t, "return_dict": False},
        torch.Generator().manual_seed(0),
    )
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and loss.item() > 0
    changed = [n for n, p in transformer.named_parameters() if not torch.equal(p, before[n])]
    assert changed == ["repvideo_gates.gate"]
    # Window 2 over 4 blocks: only block 2 sees a cache of two outputs, so only its gate has a gradient.
    assert gates.gate.grad[2].abs() > 0
    assert torch.count_nonzero(gates.gate.grad).item() == 1


@pytest.mark.parametrize("module", ["training.objectives", "training.trainer"])
def test_training_docstring_examples_run(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(f"repvideo_diffusers.{module}"), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0

"""The training loop of ``repvideo train``: accelerate, three modes, checkpoints that resume bit for bit.

Determinism is by construction rather than by saved generator state: the clip order of every epoch, and the noise
and timesteps of every micro-batch, come from generators seeded by ``(seed, epoch)`` and ``(seed, step, micro)``.
A resumed run therefore draws exactly what the uninterrupted run drew, and every rank draws the whole global batch
and keeps its own slice, so N processes see the same samples and noise as one process with the same global batch.
Accelerate's ``save_state`` still saves the optimizer, learning-rate scheduler and every RNG (for dropout and
anything else that uses the global generators); a save hook replaces its full-model copy by the trainable
parameters only (gates, LoRA), so a gates checkpoint of CogVideoX-2B is kilobytes plus the optimizer state
(`repvideo_diffusers.training.checkpoints`).

`train` runs its parts in a fixed order, and the order matters for bitwise resume: everything that draws from the
global generators (the LoRA initialisation) runs after ``set_seed`` and in the same place on every run.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from diffusers.utils import logging

from .checkpoints import Progress, register_trainable_hooks, resolve_resume, resume, run_fingerprint, save_checkpoint
from .config import TRAIN_MODES, TrainConfig, TrainResult  # noqa: F401 - TRAIN_MODES: its old home
from .outputs import save_outputs, write_validation_video
from .workspace import OutputFolder, check_train_inputs

logger = logging.get_logger(__name__)


def training_loss(transformer, objective, x0: torch.Tensor, forward_kwargs, generator: torch.Generator):
    """One diffusion / flow-matching loss for a batch of clean latents ``x0``.

    ``forward_kwargs(noisy, timestep)`` returns the transformer's keyword arguments; this is the model-agnostic core
    that `train` runs, usable on its own for families whose data path `repvideo train` does not read.

    Example:
        ```python
        >>> import torch
        >>> from diffusers import FlowMatchEulerDiscreteScheduler
        >>> from repvideo_diffusers import RepVideoConfig, apply_repvideo
        >>> from repvideo_diffusers.testing import TINY_MODELS
        >>> from repvideo_diffusers.training import objective_for, training_loss

        >>> transformer, inputs = TINY_MODELS["Wan"].build(seed=0)
        >>> _ = apply_repvideo(transformer, RepVideoConfig(window=2))
        >>> loss = training_loss(transformer, objective_for(FlowMatchEulerDiscreteScheduler(shift=3.0)),
        ...                      inputs["hidden_states"], lambda noisy, t: {**inputs, "hidden_states": noisy,
        ...                      "timestep": t, "return_dict": False}, torch.Generator().manual_seed(0))
        >>> bool(torch.isfinite(loss))
        True
        >>> loss.backward()  # reaches the gates: transformer.repvideo_gates.gate.grad

        ```
    """
    batch = objective.sample(x0, generator)
    prediction = transformer(**forward_kwargs(batch.noisy, batch.timestep))[0]
    return objective.loss(prediction, batch.target)


def _step_generator(seed: int, *parts: int) -> torch.Generator:
    value = seed
    for part in parts:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


def _epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(num_samples, generator=_step_generator(seed, 7, epoch)).tolist()


def _global_indices(position: int, count: int, num_samples: int, seed: int) -> list[int]:
    """Sample indices ``position .. position + count`` of the endless, per-epoch shuffled stream."""
    out, orders = [], {}
    for p in range(position, position + count):
        epoch = p // num_samples
        if epoch not in orders:
            orders[epoch] = _epoch_order(num_samples, seed, epoch)
        out.append(orders[epoch][p % num_samples])
    return out


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    except (ImportError, OSError):
        return None


class TrainingSize(NamedTuple):
    height: int
    width: int
    num_frames: int
    max_sequence_length: int


@dataclass
class _Run:
    """What every step of one run reads, built once by `train`."""

    config: TrainConfig
    accelerator: object
    pipe: object
    facts: object  # the family's TrainingFacts
    objective: object
    size: TrainingSize
    samples: list
    gates: object
    model: object  # the transformer as accelerate prepared it (DDP-wrapped under several processes)
    optimizer: object
    lr_scheduler: object
    trainable: list

    @property
    def global_batch(self) -> int:
        """Clips per micro-step, all processes together."""
        return self.config.batch_size * self.accelerator.num_processes


def _start_accelerator(config: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    from .._compat import reset_accelerator_state_if_single_process

    output_dir = Path(config.output_dir)
    report_to = config.report_to
    if report_to == "auto":
        import importlib.util

        report_to = "tensorboard" if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX") else None
    # A second run in the same process (a notebook, the tests) may use another mixed precision: start afresh.
    reset_accelerator_state_if_single_process()
    return Accelerator(
        mixed_precision=config.mixed_precision, log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )


def _load_pipeline(config: TrainConfig, accelerator):
    from ..generation import load_pipeline
    from ..utils.dtypes import DTYPES

    # Frozen weights (text encoder, VAE, base transformer) in the mixed-precision dtype; trainable ones go to
    # float32 in `_attach_repvideo`, as the optimizer needs.
    dtype = DTYPES.get(config.mixed_precision, torch.float32)
    with accelerator.main_process_first():  # one process downloads (or builds the tiny model), the others reuse it
        pipe = load_pipeline(config.model, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _training_size(pipe, facts, config: TrainConfig) -> TrainingSize:
    """The size to train at (the model's defaults where not given), refused when the model cannot take it."""
    default_h, default_w, default_f = facts.default_size(pipe)
    height, width, num_frames = config.height or default_h, config.width or default_w, config.num_frames or default_f
    if facts.size_multiples is not None:
        temporal, multiple = facts.size_multiples(pipe)
    else:
        temporal = getattr(pipe, "vae_scale_factor_temporal", None)
        spatial = getattr(pipe, "vae_scale_factor_spatial", None)
        multiple = spatial * 2 if spatial else None  # VAE downsampling, then 2x2 patches
    if temporal and (num_frames - 1) % temporal:
        lower = (num_frames - 1) // temporal * temporal + 1
        raise ValueError(f"--num-frames must be 1 + {temporal}k for this model, got {num_frames}. Use {lower}.")
    for name, value in (("height", height), ("width", width)):
        if multiple and value % multiple:
            raise ValueError(f"--{name} must be a multiple of {multiple} for this model, got {value}.")
    return TrainingSize(height, width, num_frames, config.max_sequence_length or facts.max_sequence_length(pipe))


def _load_samples(pipe, family: str, config: TrainConfig, accelerator, size: TrainingSize, model_id: str) -> list:
    from .data import load_dataset

    # Encode on the main process first, so the others read its precomputed files instead of encoding again.
    with accelerator.main_process_first():
        samples = load_dataset(
            pipe.to(accelerator.device), family, config.data, height=size.height, width=size.width,
            num_frames=size.num_frames, max_sequence_length=size.max_sequence_length, seed=config.seed,
            precompute_dir=config.precompute_dir, model_id=model_id,
        )
    if pipe.text_encoder is not None:  # not needed for training; validation moves it back
        pipe.text_encoder.to("cpu")
    return samples


def _attach_repvideo(transformer, config: TrainConfig, model_id: str):
    """RepVideo on ``transformer`` (fresh or saved gates), and the parameters of ``config.train`` made trainable."""
    from ..core import RepVideoConfig, apply_repvideo

    if config.gates:
        gates = apply_repvideo(transformer, config.gates)
    else:
        gates = apply_repvideo(transformer, RepVideoConfig(window=config.window, gate_init=config.gate_init))
    gates.register_to_config(base_model=model_id)
    if config.train == "full":
        transformer.requires_grad_(True)
    else:
        transformer.requires_grad_(False)
        if config.train == "lora":
            from peft import LoraConfig

            transformer.add_adapter(LoraConfig(
                r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank, init_lora_weights=True,
                target_modules=["to_q", "to_k", "to_v", "to_out.0"],
            ))
        # After add_adapter, which marks only the adapter as trainable.
        gates.requires_grad_(True)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    for parameter in transformer.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    transformer.train()
    return gates


def _build_optimizer(accelerator, transformer, config: TrainConfig):
    """AdamW over the trainable parameters and the learning-rate schedule, prepared by accelerate."""
    from diffusers.optimization import get_scheduler

    trainable = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(
        config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_steps * accelerator.num_processes,
    )
    model, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    return model, optimizer, lr_scheduler, trainable


def _optimizer_step(run: _Run, step: int) -> float:
    """One optimizer step over ``gradient_accumulation_steps`` micro-batches; returns the loss of all processes."""
    config, accelerator = run.config, run.accelerator
    accumulation, rank = config.gradient_accumulation_steps, accelerator.process_index
    step_loss = torch.zeros((), device=accelerator.device)
    for micro in range(accumulation):
        position = (step * accumulation + micro) * run.global_batch
        indices = _global_indices(position, run.global_batch, len(run.samples), config.seed)
        batch = {key: torch.stack([run.samples[i][key] for i in indices]).to(accelerator.device)
                 for key in run.samples[0]}
        # The whole global batch is noised on every rank, then each keeps its slice: same draws at any world size.
        noised = run.objective.sample(batch["latents"], _step_generator(config.seed, step, micro))
        mine = slice(rank * config.batch_size, (rank + 1) * config.batch_size)
        local = {key: value[mine] for key, value in batch.items()}
        sync = micro == accumulation - 1
        with (nullcontext() if sync else accelerator.no_sync(run.model)), accelerator.autocast():
            inputs = run.facts.forward_kwargs(run.pipe, noised.noisy[mine], local, noised.timestep[mine])
            loss = run.objective.loss(run.model(**inputs)[0], noised.target[mine])
        accelerator.backward(loss / accumulation)
        step_loss += loss.detach() / accumulation
    if config.max_grad_norm:
        accelerator.clip_grad_norm_(run.trainable, config.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return accelerator.reduce(step_loss, reduction="mean").item()


def _record_step(run: _Run, progress: Progress, loss: float) -> list[float]:
    """Count the step, keep its loss, and every ``log_every`` steps log loss, learning rate and gates."""
    config = run.config
    progress.step += 1
    progress.losses.append(loss)
    gate_values = run.gates.gate.detach().float().cpu().tolist()
    if progress.step % config.log_every == 0 or progress.step == config.max_steps:
        progress.history_steps.append(progress.step)
        progress.history.append(gate_values)
        logs = {"train/loss": loss, "train/lr": run.lr_scheduler.get_last_lr()[0]}
        logs.update({f"gates/block_{i:02d}": v for i, v in enumerate(gate_values)})
        run.accelerator.log(logs, step=progress.step)
    return gate_values


def _run_steps(run: _Run, progress: Progress, fingerprint: dict, folder) -> list[float]:
    """Steps from ``progress.step`` to ``max_steps``, with checkpoints and validation videos; returns step times.

    ``folder`` (`OutputFolder`) is told when the first checkpoint is complete."""
    from tqdm.auto import tqdm

    config, accelerator = run.config, run.accelerator
    bar = tqdm(range(config.max_steps), initial=progress.step, desc="repvideo train", dynamic_ncols=True,
               disable=not (config.progress_bar and accelerator.is_local_main_process))
    step_times = []
    while progress.step < config.max_steps:
        started = time.perf_counter()
        loss = _optimizer_step(run, progress.step)
        step_times.append(time.perf_counter() - started)
        gate_values = _record_step(run, progress, loss)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", gates=f"{min(gate_values):.3f}..{max(gate_values):.3f}")
        step = progress.step
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            save_checkpoint(accelerator, Path(config.output_dir), progress, fingerprint,
                            samples_seen=step * run.global_batch * config.gradient_accumulation_steps,
                            total_limit=config.checkpoints_total_limit)
            folder.landed()
        if config.validation_every and step % config.validation_every == 0 and accelerator.is_main_process:
            write_validation_video(run.pipe, accelerator, config, step, **run.size._asdict())
    bar.close()
    return step_times


def _finish(run: _Run, progress: Progress, step_times: list[float], model_id: str, folder) -> TrainResult:
    """The result of the run, checked across processes, with its outputs written by the main process."""
    config, accelerator = run.config, run.accelerator
    output_dir = Path(config.output_dir)
    result = TrainResult(
        output_dir=output_dir, gates_dir=output_dir / "repvideo", steps=progress.step,
        final_loss=progress.losses[-1] if progress.losses else float("nan"), losses=progress.losses,
        gates=run.gates.gate.detach().float().cpu().tolist(), num_samples=len(run.samples),
        step_time_s=(sorted(step_times)[len(step_times) // 2] if step_times else None),
        num_processes=accelerator.num_processes, global_batch=run.global_batch * config.gradient_accumulation_steps,
        pipeline=run.pipe, objective=run.objective.describe(),
        lora_dir=output_dir / "lora" if config.train == "lora" else None,
        transformer_dir=output_dir / "transformer" if config.train == "full" else None,
    )
    # DDP keeps replicas identical by construction; check it, since a silent divergence would waste a whole run.
    every_rank = accelerator.gather(run.gates.gate.detach().float()[None])
    result.peak_memory_mb = _peak_memory_mb(accelerator.device)
    result.rank_gate_spread = (every_rank.max(0).values - every_rank.min(0).values).max().item()
    if accelerator.is_main_process:
        save_outputs(run.pipe, run.gates, config, result, model_id, progress.history_steps, progress.history)
        folder.landed()
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def train(config: TrainConfig) -> TrainResult:
    r"""Train RepVideo gates (and optionally LoRA or all weights) on a folder of captioned videos.

    Runs under ``accelerate launch`` as is (DDP across processes); without it, one process on the default device.
    Returns a `TrainResult`; the gates land in ``<output_dir>/repvideo/`` with a model card and a gate plot.

    Example:
        ```python
        >>> from repvideo_diffusers.training import TrainConfig, train
        >>> result = train(TrainConfig(data="clips/", output_dir="runs/tiny", max_steps=20))  # doctest: +SKIP
        >>> result.gates_dir  # doctest: +SKIP
        PosixPath('runs/tiny/repvideo')
        ```
    """
    from accelerate.utils import set_seed

    from ..families import get_family
    from ..tiny import TINY_MODEL_NAME
    from .data import family_data
    from .objectives import objective_for

    config.check()
    check_train_inputs(config)  # every path and setting, before any model is loaded
    resume_from = resolve_resume(config.resume, Path(config.output_dir)) if config.resume else None
    with OutputFolder(config.output_dir, replace=config.overwrite) as folder:
        accelerator = _start_accelerator(config)
        set_seed(config.seed)

        pipe = _load_pipeline(config, accelerator)
        family = get_family(pipe.transformer).name
        facts = family_data(family)
        objective = objective_for(pipe.scheduler)
        size = _training_size(pipe, facts, config)
        model_id = config.model or TINY_MODEL_NAME
        samples = _load_samples(pipe, family, config, accelerator, size, model_id)

        gates = _attach_repvideo(pipe.transformer, config, model_id)
        model, optimizer, lr_scheduler, trainable = _build_optimizer(accelerator, pipe.transformer, config)
        register_trainable_hooks(accelerator, pipe.transformer)
        run = _Run(config, accelerator, pipe, facts, objective, size, samples, gates, model, optimizer, lr_scheduler,
                   trainable)

        fingerprint = run_fingerprint(config, model_id=model_id, global_batch=run.global_batch,
                                      num_samples=len(samples), num_frames=size.num_frames, height=size.height,
                                      width=size.width)
        progress = resume(accelerator, resume_from, fingerprint) if resume_from is not None else Progress()
        folder.begin()  # --overwrite: the earlier run is set aside now, deleted when the first checkpoint lands
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            accelerator.init_trackers("repvideo-train", config={k: v for k, v in asdict(config).items()
                                                                if isinstance(v, (int, float, str, bool))})
        step_times = _run_steps(run, progress, fingerprint, folder)
        return _finish(run, progress, step_times, model_id, folder)

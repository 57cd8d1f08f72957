"""The training loop of ``repvideo train``: accelerate, three modes, checkpoints that resume bit for bit.

Determinism is by construction rather than by saved generator state: the clip order of every epoch, and the noise
and timesteps of every micro-batch, come from generators seeded by ``(seed, epoch)`` and ``(seed, step, micro)``.
A resumed run therefore draws exactly what the uninterrupted run drew, and every rank draws the whole global batch
and keeps its own slice, so N processes see the same samples and noise as one process with the same global batch.
Accelerate's ``save_state`` still saves the optimizer, learning-rate scheduler and every RNG (for dropout and
anything else that uses the global generators); a save hook replaces its full-model copy by the trainable
parameters only (gates, LoRA), so a gates checkpoint of CogVideoX-2B is kilobytes plus the optimizer state.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from diffusers.utils import logging

logger = logging.get_logger(__name__)

TRAIN_MODES = ("gates", "lora", "full")
_DEFAULT_LR = {"gates": 1e-3, "lora": 1e-4, "full": 1e-5}
_CHECKPOINTS = "checkpoints"
_STATE_FILE = "trainer_state.json"
_TRAINABLE_FILE = "trainable.safetensors"
_MIXED_PRECISION = ("no", "fp16", "bf16")


@dataclass
class TrainConfig:
    r"""Everything ``repvideo train`` takes; the CLI flags map one to one (``--max-steps`` -> ``max_steps``).

    Args:
        data: folder with ``metadata.jsonl`` (or ``metadata.csv``), or a CSV file with ``file_name,text``.
        output_dir: where checkpoints, validation videos, logs and the final ``repvideo/`` gates go.
        model: local pipeline folder or Hub id; ``None`` is the embedded tiny CogVideoX pipeline.
        train: ``"gates"`` (base frozen, only the gates learn), ``"lora"`` (gates + LoRA via peft) or ``"full"``.
        gate_init: initial gate value; ``0.0`` starts from exactly the base model.
        resume: ``"latest"`` or a checkpoint folder; the run continues as if never interrupted.
    """

    data: str
    output_dir: str
    model: str | None = None
    train: str = "gates"
    max_steps: int = 1000
    learning_rate: float | None = None  # default per mode: gates 1e-3, lora 1e-4, full 1e-5
    batch_size: int = 1  # per process
    gradient_accumulation_steps: int = 1
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    gate_init: float = 0.5
    window: int = 6
    gates: str | None = None  # start from saved gates instead of fresh ones
    lora_rank: int = 16
    lora_alpha: float | None = None  # default: lora_rank
    weight_decay: float = 0.0  # not 1e-2: decay would pull the gates towards 0 (the base model)
    max_grad_norm: float = 1.0
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    checkpoint_every: int = 500
    checkpoints_total_limit: int | None = None
    resume: str | None = None
    seed: int = 0
    height: int | None = None
    width: int | None = None
    num_frames: int | None = None
    max_sequence_length: int | None = None
    precompute_dir: str | None = None
    validation_every: int | None = None
    validation_prompt: str = "a red ball rolling across a wooden table"
    validation_steps: int | None = None  # denoising steps; default 4 for the tiny model, 50 otherwise
    log_every: int = 1
    push_to_hub: str | None = None
    report_to: str | None = "auto"  # "auto": TensorBoard when installed
    progress_bar: bool = True

    def check(self) -> None:
        if self.train not in TRAIN_MODES:
            raise ValueError(f"--train must be one of {', '.join(TRAIN_MODES)}, got {self.train!r}.")
        if self.mixed_precision not in _MIXED_PRECISION:
            raise ValueError(f"--mixed-precision must be one of {', '.join(_MIXED_PRECISION)}, got {self.mixed_precision!r}.")
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "checkpoint_every", "lora_rank",
                     "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}.")
        if self.learning_rate is not None and not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"--learning-rate must be a positive number, got {self.learning_rate!r}.")
        if self.validation_every is not None and self.validation_every < 1:
            raise ValueError(f"--validation-every must be a positive integer, got {self.validation_every!r}.")

    @property
    def lr(self) -> float:
        return self.learning_rate if self.learning_rate is not None else _DEFAULT_LR[self.train]


@dataclass
class TrainResult:
    """What a finished run produced."""

    output_dir: Path
    gates_dir: Path
    steps: int
    final_loss: float
    losses: list[float] = field(default_factory=list)
    gates: list[float] = field(default_factory=list)
    lora_dir: Path | None = None
    transformer_dir: Path | None = None
    num_samples: int = 0
    objective: str = ""  # e.g. "diffusion (v_prediction, uniform t in [0, 1000))"
    step_time_s: float | None = None  # median wall time of one optimizer step
    num_processes: int = 1
    global_batch: int = 1  # clips per optimizer step, all processes and accumulation together
    peak_memory_mb: float | None = None  # CUDA: peak allocated; CPU: peak resident set of the process
    rank_gate_spread: float = 0.0  # largest difference between the gates of any two processes (0 under DDP)
    pipeline: object = field(default=None, repr=False)  # the trained pipeline, RepVideo (and LoRA) attached


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


def _list_checkpoints(output_dir: Path) -> list[Path]:
    folder = output_dir / _CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-") and (p / _STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _resolve_resume(resume: str, output_dir: Path) -> Path | None:
    if resume == "latest":
        found = _list_checkpoints(output_dir)
        if not found:
            logger.warning(f"--resume latest: no checkpoint in {output_dir / _CHECKPOINTS}; starting from step 0.")
            return None
        return found[-1]
    path = Path(resume)
    if not (path / _STATE_FILE).is_file():
        raise FileNotFoundError(
            f"--resume {resume!r} is not a checkpoint folder (no {_STATE_FILE} in it). Pass 'latest' or a "
            f"folder like {output_dir / _CHECKPOINTS / 'checkpoint-500'}."
        )
    return path


def _replace_dir(staging: Path, final: Path) -> None:
    """Move a fully written folder into place; the old one is removed only after the new one is there."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _plot_gates(history_steps, history, final, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    left.bar(range(len(final)), final, color="tab:blue")
    left.set_xlabel("block (execution order)")
    left.set_ylabel("gate")
    left.set_title("final gate values")
    if history:
        values = torch.tensor(history)
        for block in range(values.shape[1]):
            right.plot(history_steps, values[:, block].tolist(), label=str(block), linewidth=1)
        if values.shape[1] <= 12:
            right.legend(title="block", fontsize=6, ncol=2)
    right.set_xlabel("step")
    right.set_title("gate values during training")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _peak_memory_mb(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux
    except (ImportError, OSError):
        return None


def _configure_trainable(transformer, gates, config: TrainConfig) -> None:
    if config.train == "full":
        transformer.requires_grad_(True)
        return
    transformer.requires_grad_(False)
    if config.train == "lora":
        from peft import LoraConfig

        transformer.add_adapter(LoraConfig(
            r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank, init_lora_weights=True,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        ))
    # After add_adapter, which marks only the adapter as trainable.
    gates.requires_grad_(True)


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
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from ..generate import load_pipeline
    from ..core import RepVideoConfig, apply_repvideo
    from ..families import get_family
    from ..tiny import TINY_MODEL_NAME
    from .data import family_data, load_dataset
    from .objectives import objective_for

    config.check()
    output_dir = Path(config.output_dir)
    report_to = config.report_to
    if report_to == "auto":
        import importlib.util

        report_to = "tensorboard" if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX") else None
    from .._compat import reset_accelerator_state_if_single_process

    # A second run in the same process (a notebook, the tests) may use another mixed precision: start afresh.
    reset_accelerator_state_if_single_process()
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, log_with=report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    resume_from = _resolve_resume(config.resume, output_dir) if config.resume else None
    set_seed(config.seed)

    # Frozen weights (text encoder, VAE, base transformer) in the mixed-precision dtype; trainable ones go to
    # float32 below, as the optimizer needs.
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.mixed_precision)
    with accelerator.main_process_first():  # one process downloads (or builds the tiny model), the others reuse it
        pipe = load_pipeline(config.model, half or torch.float32)
    pipe.set_progress_bar_config(disable=True)
    transformer = pipe.transformer
    family = get_family(transformer).name
    facts = family_data(family)
    objective = objective_for(pipe.scheduler)
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
    max_sequence_length = config.max_sequence_length or facts.max_sequence_length(pipe)
    model_id = config.model or TINY_MODEL_NAME

    # Encode on the main process first, so the others read its precomputed files instead of encoding again.
    with accelerator.main_process_first():
        samples = load_dataset(
            pipe.to(accelerator.device), family, config.data, height=height, width=width, num_frames=num_frames,
            max_sequence_length=max_sequence_length, seed=config.seed, precompute_dir=config.precompute_dir,
            model_id=model_id,
        )
    if pipe.text_encoder is not None:  # not needed for training; validation moves it back
        pipe.text_encoder.to("cpu")

    if config.gates:
        gates = apply_repvideo(transformer, config.gates)
    else:
        gates = apply_repvideo(transformer, RepVideoConfig(window=config.window, gate_init=config.gate_init))
    gates.register_to_config(base_model=config.model or TINY_MODEL_NAME)
    _configure_trainable(transformer, gates, config)
    if config.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    for parameter in transformer.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    transformer.train()
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    trainable_names = [n for n, p in transformer.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    lr_scheduler = get_scheduler(
        config.lr_scheduler, optimizer, num_warmup_steps=config.lr_warmup_steps * accelerator.num_processes,
        num_training_steps=config.max_steps * accelerator.num_processes,
    )
    model, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)

    def save_trainable(models, weights, folder):
        if accelerator.is_main_process:
            state = {n: p.detach().float().cpu().contiguous() for n, p in transformer.named_parameters() if p.requires_grad}
            save_file(state, os.path.join(folder, _TRAINABLE_FILE))
        weights.clear()  # accelerate would otherwise save the whole transformer again

    def load_trainable(models, folder):
        models.clear()
        state = load_file(os.path.join(folder, _TRAINABLE_FILE))
        missing = sorted(set(trainable_names) - set(state))
        if missing:
            raise ValueError(
                f"Checkpoint {folder} does not hold trainable parameters of this run ({missing[:3]}...): it was saved "
                f"with another --train mode or model. Resume with the settings it was written with."
            )
        named = dict(transformer.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                named[name].copy_(value)

    accelerator.register_save_state_pre_hook(save_trainable)
    accelerator.register_load_state_pre_hook(load_trainable)

    world, rank = accelerator.num_processes, accelerator.process_index
    global_batch = config.batch_size * world
    run_fingerprint = {"model": model_id, "train": config.train, "global_batch": global_batch,
                       "gradient_accumulation_steps": config.gradient_accumulation_steps, "seed": config.seed,
                       "num_samples": len(samples), "num_frames": num_frames, "height": height, "width": width}
    step, losses, history_steps, history = 0, [], [], []
    if resume_from is not None:
        state = json.loads((resume_from / _STATE_FILE).read_text())
        different = {k: (state["run"].get(k), v) for k, v in run_fingerprint.items() if state["run"].get(k) != v}
        if different:
            raise ValueError(
                f"Cannot resume from {resume_from}: it was written with different settings "
                f"({', '.join(f'{k}: {old} there, {new} now' for k, (old, new) in different.items())}). "
                "Resume with the same settings, or start a new --output-dir."
            )
        accelerator.load_state(str(resume_from))
        step, losses = state["step"], state["losses"]
        history_steps, history = state["gate_history_steps"], state["gate_history"]
        logger.info(f"Resumed from {resume_from} at step {step}.")

    if accelerator.is_main_process:
        accelerator.init_trackers("repvideo-train", config={k: v for k, v in asdict(config).items()
                                                            if isinstance(v, (int, float, str, bool))})

    def checkpoint(at_step: int) -> None:
        folder = output_dir / _CHECKPOINTS / f"checkpoint-{at_step}"
        staging = output_dir / _CHECKPOINTS / f".checkpoint-{at_step}.partial"
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(staging))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {"step": at_step, "samples_seen": at_step * global_batch * config.gradient_accumulation_steps,
                     "losses": losses, "gate_history_steps": history_steps, "gate_history": history,
                     "run": run_fingerprint}
            (staging / _STATE_FILE).write_text(json.dumps(state))
            _replace_dir(staging, folder)
            if config.checkpoints_total_limit:
                for old in _list_checkpoints(output_dir)[: -config.checkpoints_total_limit]:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    def validate(at_step: int) -> None:
        from ..utils.video import write_video

        transformer.eval()
        if pipe.text_encoder is not None:
            pipe.text_encoder.to(accelerator.device)
        call = {"prompt": config.validation_prompt, "height": height, "width": width, "num_frames": num_frames,
                "num_inference_steps": config.validation_steps or (4 if config.model is None else 50),
                "generator": torch.Generator().manual_seed(config.seed), "output_type": "np",
                "max_sequence_length": max_sequence_length}
        with torch.no_grad(), accelerator.autocast():
            frames = pipe(**call).frames[0]
        path = output_dir / "validation" / f"step-{at_step:06d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(frames, path, fps=8)
        if pipe.text_encoder is not None:
            pipe.text_encoder.to("cpu")
        transformer.train()
        logger.info(f"Validation video at step {at_step}: {path}")

    progress = tqdm(range(config.max_steps), initial=step, desc="repvideo train", dynamic_ncols=True,
                    disable=not (config.progress_bar and accelerator.is_local_main_process))
    accumulation = config.gradient_accumulation_steps
    step_times = []
    while step < config.max_steps:
        started = time.perf_counter()
        step_loss = torch.zeros((), device=accelerator.device)
        for micro in range(accumulation):
            position = (step * accumulation + micro) * global_batch
            indices = _global_indices(position, global_batch, len(samples), config.seed)
            batch = {key: torch.stack([samples[i][key] for i in indices]).to(accelerator.device)
                     for key in samples[0]}
            # The whole global batch is noised on every rank, then each keeps its slice: same draws at any world size.
            noised = objective.sample(batch["latents"], _step_generator(config.seed, step, micro))
            mine = slice(rank * config.batch_size, (rank + 1) * config.batch_size)
            local = {key: value[mine] for key, value in batch.items()}
            sync = micro == accumulation - 1
            with (nullcontext() if sync else accelerator.no_sync(model)), accelerator.autocast():
                prediction = model(**facts.forward_kwargs(pipe, noised.noisy[mine], local, noised.timestep[mine]))[0]
                loss = objective.loss(prediction, noised.target[mine])
            accelerator.backward(loss / accumulation)
            step_loss += loss.detach() / accumulation
        if config.max_grad_norm:
            accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        mean_loss = accelerator.reduce(step_loss, reduction="mean").item()
        step_times.append(time.perf_counter() - started)
        losses.append(mean_loss)
        gate_values = gates.gate.detach().float().cpu().tolist()
        if step % config.log_every == 0 or step == config.max_steps:
            history_steps.append(step)
            history.append(gate_values)
            logs = {"train/loss": mean_loss, "train/lr": lr_scheduler.get_last_lr()[0]}
            logs.update({f"gates/block_{i:02d}": v for i, v in enumerate(gate_values)})
            accelerator.log(logs, step=step)
        progress.update(1)
        progress.set_postfix(loss=f"{mean_loss:.4f}", gates=f"{min(gate_values):.3f}..{max(gate_values):.3f}")
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            checkpoint(step)
        if config.validation_every and step % config.validation_every == 0 and accelerator.is_main_process:
            validate(step)
    progress.close()

    result = TrainResult(output_dir=output_dir, gates_dir=output_dir / "repvideo", steps=step,
                         final_loss=losses[-1] if losses else float("nan"), losses=losses,
                         gates=gates.gate.detach().float().cpu().tolist(), num_samples=len(samples),
                         step_time_s=(sorted(step_times)[len(step_times) // 2] if step_times else None),
                         num_processes=world, global_batch=global_batch * accumulation, pipeline=pipe,
                         objective=objective.describe())
    # DDP keeps replicas identical by construction; check it, since a silent divergence would waste a whole run.
    every_rank = accelerator.gather(gates.gate.detach().float()[None])
    result.peak_memory_mb = _peak_memory_mb(accelerator.device)
    result.rank_gate_spread = (every_rank.max(0).values - every_rank.min(0).values).max().item()
    if accelerator.is_main_process:
        _save_outputs(pipe, transformer, gates, config, result, history_steps, history, model_id)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if config.train == "lora":
        result.lora_dir = output_dir / "lora"
    if config.train == "full":
        result.transformer_dir = output_dir / "transformer"
    return result


def _card_text(config: TrainConfig, result: TrainResult, model_id: str) -> str:
    mode = {"gates": "gates only (base weights frozen)", "lora": "gates + LoRA (peft)", "full": "all weights"}[config.train]
    return f"""
## Training

Trained with `repvideo train` (repvideo-diffusers):

| | |
|---|---|
| base model | `{model_id}` |
| trained | {mode} |
| training clips | {result.num_samples} |
| steps | {result.steps} |
| objective | {result.objective} |
| learning rate | {config.lr:g} |
| global batch | {result.global_batch} ({config.batch_size} per process x {result.num_processes} processes x {config.gradient_accumulation_steps} accumulation) |
| gate init | {config.gate_init:g} |
| final loss | {result.final_loss:.6f} |

![gate values](gates.png)
"""


def _save_outputs(pipe, transformer, gates, config, result, history_steps, history, model_id) -> None:
    output_dir = result.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".repvideo-", dir=output_dir))
    gates.save_pretrained(staging, model_card_text=_card_text(config, result, model_id))
    _plot_gates(history_steps, history, result.gates, staging / "gates.png")
    _replace_dir(staging, result.gates_dir)
    if config.train == "lora":
        from peft.utils import get_peft_model_state_dict

        staging = Path(tempfile.mkdtemp(prefix=".lora-", dir=output_dir))
        lora = {k: v.float() for k, v in get_peft_model_state_dict(transformer).items()}
        type(pipe).save_lora_weights(staging, transformer_lora_layers=lora)
        _replace_dir(staging, output_dir / "lora")
    if config.train == "full":
        from ..core import apply_repvideo, remove_repvideo

        staging = Path(tempfile.mkdtemp(prefix=".transformer-", dir=output_dir))
        remove_repvideo(transformer)  # the base transformer's own format, gates saved apart in repvideo/
        transformer.save_pretrained(staging)
        apply_repvideo(transformer, gates)  # the returned pipeline keeps RepVideo, as in the other modes
        _replace_dir(staging, output_dir / "transformer")
    summary = {"steps": result.steps, "final_loss": result.final_loss, "gates": result.gates,
               "num_samples": result.num_samples, "learning_rate": config.lr, "objective": result.objective, "train": config.train,
               "median_step_time_s": result.step_time_s, "num_processes": result.num_processes,
               "global_batch": result.global_batch, "rank_gate_spread": result.rank_gate_spread,
               "peak_memory_mb": result.peak_memory_mb, "losses": result.losses}
    (output_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    if config.push_to_hub:
        from huggingface_hub import create_repo, upload_folder

        repo_id = create_repo(config.push_to_hub, exist_ok=True).repo_id
        upload_folder(repo_id=repo_id, folder_path=str(result.gates_dir), commit_message="Upload RepVideo gates")
        if config.train == "lora":
            upload_folder(repo_id=repo_id, folder_path=str(output_dir / "lora"), path_in_repo="lora",
                          commit_message="Upload LoRA trained with the gates")
        logger.info(f"Pushed to https://huggingface.co/{repo_id}")

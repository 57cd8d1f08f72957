"""Text-to-video with RepVideo enabled: the library behind ``repvideo generate``.

One prompt, or a file of prompts one per line, numbered by line among the non-empty lines (`read_prompts`,
`video_jobs`); prompt ``k`` uses seed ``seed + k``. Under ``accelerate launch`` `generate_videos` splits the prompts
between the processes with ``PartialState.split_between_processes``: each process writes its own share, so every
video is written exactly once, and the files do not depend on the number of processes. Every mp4 is written beside
its destination and moved into place when complete.

Example:
    ```python
    >>> import tempfile, types
    >>> from pathlib import Path
    >>> import torch
    >>> import repvideo_diffusers  # adds pipe.enable_repvideo()
    >>> from repvideo_diffusers.generation import generate_videos, prepare_pipeline, video_jobs
    >>> options = types.SimpleNamespace(model=None, steps=1, frames=None, height=None, width=None, guidance_scale=6.0)
    >>> pipe, call = prepare_pipeline(options, torch.float32)  # None: the embedded tiny CogVideoX pipeline
    >>> _ = pipe.enable_repvideo()
    >>> pipe.set_progress_bar_config(disable=True)
    >>> out = Path(tempfile.mkdtemp()) / "cat.mp4"
    >>> written = generate_videos(pipe, video_jobs("a cat", out=out), call, device="cpu")  # doctest: +ELLIPSIS
    wrote .../cat.mp4 (9 frames, 96x64, with RepVideo, ...s on cpu)
    >>> written == [out] and out.is_file()
    True

    ```
"""

from __future__ import annotations

import inspect
import os
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import torch


def load_pipeline(model: str | None, dtype: torch.dtype):
    """The embedded tiny pipeline (model None) or `DiffusionPipeline.from_pretrained(model)`."""
    from diffusers import DiffusionPipeline

    from .tiny import load_tiny_pipeline

    if model is None:
        return load_tiny_pipeline(dtype=dtype)
    if not Path(model).exists() and (model.startswith((".", "/", "~")) or model.count("/") != 1):
        raise FileNotFoundError(
            f"--model {model!r}: no such folder, and it is not a Hub id of the form 'owner/name'. "
            "Pass a local diffusers pipeline folder (with model_index.json) or a Hub id."
        )
    if Path(model).is_dir() and not (Path(model) / "model_index.json").is_file():
        raise ValueError(
            f"--model {model!r} is a folder without model_index.json, so it is not a diffusers pipeline folder. "
            "Point --model at the folder that holds model_index.json."
        )
    try:
        return DiffusionPipeline.from_pretrained(model, dtype=dtype)
    except Exception as error:  # noqa: BLE001 - re-raised as is unless it has a known user-side cause
        raise _loading_error(model, error) from error


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _corrupt_weight_file(folder: str | os.PathLike) -> Path | None:
    """The first safetensors file under ``folder`` whose header cannot be read (truncated, corrupt), or None."""
    from safetensors import safe_open

    for file in sorted(Path(folder).rglob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt") as handle:
                handle.keys()
        except Exception:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
            return file
    return None


def _loading_error(model: str, error: Exception) -> Exception:
    """The error to show when ``from_pretrained(model)`` failed: a damaged weights file named, a Hub failure in
    one line with the fix, anything else unchanged (it may be a bug)."""
    if Path(model).is_dir():
        bad = _corrupt_weight_file(model)
        if bad is not None:
            return OSError(f"--model {model!r}: the weights file {str(bad)!r} cannot be read (truncated or corrupt). "
                           "Copy or download it again.")
        return error
    if isinstance(error, OSError):
        return OSError(f"--model {model!r} could not be loaded from the Hugging Face Hub ({_first_line(error)}). "
                       "Check the id and the network (or HF_HUB_OFFLINE), or pass a local pipeline folder.")
    return error


def prepare_pipeline(options, dtype: torch.dtype):
    """Load the pipeline and check the size options against it; returns (pipeline, pipeline call arguments).

    ``options`` holds ``model``, ``steps``, ``frames``, ``height``, ``width`` and ``guidance_scale``: the namespace
    of the ``repvideo`` pipeline options, or any object with those attributes (``types.SimpleNamespace``).
    """
    pipe = load_pipeline(options.model, dtype)
    # Frame counts the VAE can encode: 1 + k * temporal compression (1 + 4k for CogVideoX, Wan, ...).
    temporal = getattr(pipe, "vae_scale_factor_temporal", None)
    if options.frames is not None and temporal and (options.frames - 1) % temporal:
        raise ValueError(f"--frames must be 1 + {temporal}k for this model, got {options.frames}. "
                         + _frames_fix(pipe, options.frames, temporal))
    spatial = getattr(pipe, "vae_scale_factor_spatial", None) or getattr(pipe, "vae_scale_factor", None)
    for name in ("height", "width"):
        value = getattr(options, name)
        if value is not None and spatial and value % (spatial * 2):
            raise ValueError(f"--{name} must be a multiple of {spatial * 2} for this model, got {value}.")
    call = {
        "num_inference_steps": options.steps or (4 if options.model is None else 50),
        "guidance_scale": options.guidance_scale,
    }
    for name in ("frames", "height", "width"):
        if getattr(options, name) is not None:
            call[name] = getattr(options, name)
    return pipe, pipeline_call(pipe, {**call, **default_call(pipe)})


def default_call(pipe) -> dict:
    """What a pipeline must be called with, beyond its own defaults, to fit its transformer as built: the text
    length, where the transformer states one (226 for CogVideoX-2B, 16 for the embedded tiny model); ``{}`` when
    the pipeline's defaults fit. ``pipe(prompt, **default_call(pipe))`` runs any supported pipeline.

    Example:
        ```python
        >>> from repvideo_diffusers.generation import default_call
        >>> from repvideo_diffusers.tiny import load_tiny_pipeline
        >>> default_call(load_tiny_pipeline())
        {'max_sequence_length': 16}

        ```
    """
    text_length = getattr(getattr(pipe, "transformer", None), "config", {}).get("max_text_seq_length")
    return pipeline_call(pipe, {"max_sequence_length": text_length}) if text_length else {}


def _frames_fix(pipe, frames: int, temporal: int) -> str:
    """The nearest valid frame counts; 1 + 8k for CogVideoX 1.0, whose VAE returns 4 more frames for an even
    number of latent frames."""
    transformer = getattr(pipe, "transformer", None)
    step, note = temporal, ""
    if type(transformer).__name__ == "CogVideoXTransformer3DModel" and transformer.config.get("patch_size_t") is None:
        step, note = 2 * temporal, f" (CogVideoX 1.0 prefers 1 + {2 * temporal}k: an even number of latent frames " \
            "comes back 4 frames longer)"
    lower = max((frames - 1) // step * step + 1, 1)
    return f"Use --frames {lower} or --frames {lower + step}{note}."


def pipeline_call(pipe, call: dict) -> dict:
    """``call`` in the words of this pipeline's ``__call__``: ``frames`` under the name it uses (``num_frames``;
    Latte's ``video_length``, Sana-Video's ``frames``), arguments it does not take left out, and a guidance scale it
    takes through its guider (HunyuanVideo-1.5, Motif-Video) set there.

    Example:
        ```python
        >>> from repvideo_diffusers.generation import pipeline_call
        >>> class Pipe:
        ...     def __call__(self, prompt, video_length=16, guidance_scale=7.5): ...
        >>> pipeline_call(Pipe(), {"frames": 9, "guidance_scale": 6.0, "max_sequence_length": 16})
        {'guidance_scale': 6.0, 'video_length': 9}

        ```
    """
    parameters = inspect.signature(pipe.__call__).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    call = dict(call)
    if "frames" in call and "frames" not in parameters:
        key = next((k for k in ("num_frames", "video_length") if k in parameters), "num_frames")
        call[key] = call.pop("frames")
    guider = getattr(pipe, "guider", None)
    if "guidance_scale" in call and "guidance_scale" not in parameters and hasattr(guider, "guidance_scale"):
        guider.guidance_scale = call.pop("guidance_scale")
    return call if open_ended else {k: v for k, v in call.items() if k in parameters}


def set_attention(pipe, backend: str | None) -> None:
    """Apply `--attention` once the pipeline is on its final device (the xformers probe runs there)."""
    if backend:
        from .attention import set_attention_kernel

        print(f"attention backend: {set_attention_kernel(pipe.transformer, backend)}")


def read_prompts(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a prompts file, stripped, in order (their position is the video's number).

    Example:
        ```python
        >>> import tempfile
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "prompts.txt"
        >>> _ = path.write_text("a cat\\n\\n  waves on a beach \\n")
        >>> read_prompts(path)
        ['a cat', 'waves on a beach']

        ```
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts {str(path)!r}: no such file. Pass a text file with one prompt per line.")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts {str(path)!r} holds no prompt (only empty lines). Write one prompt per line.")
    return prompts


class VideoJob(NamedTuple):
    """One video to write: its number (which also picks its seed), its prompt and its mp4 path."""

    index: int
    prompt: str
    out: Path


def video_jobs(prompt: str | None = None, prompts: str | os.PathLike | None = None,
               out: str | os.PathLike | None = None) -> list[VideoJob]:
    """Every video of one command, before any split between processes: one ``prompt`` written to ``out``
    (default ``repvideo.mp4``), or one per line of the ``prompts`` file, numbered, in the folder ``out`` (default
    ``repvideo-videos``).

    Example:
        ```python
        >>> [tuple(job) for job in video_jobs("a cat", out="cat.mp4")]
        [(0, 'a cat', PosixPath('cat.mp4'))]

        ```
    """
    if prompt is not None and prompts is not None:
        raise ValueError("Give either a prompt or --prompts FILE, not both.")
    if prompts is None:
        if prompt is None:
            raise ValueError("No prompt: pass a text prompt, or --prompts FILE with one prompt per line.")
        if not prompt.strip():
            raise ValueError("The prompt is empty. Pass a text prompt, e.g. repvideo generate \"a cat\".")
        return [VideoJob(0, prompt, Path(out or "repvideo.mp4"))]
    texts = read_prompts(prompts)
    out_dir = Path(out or "repvideo-videos")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {str(out_dir)!r} is a file; with --prompts, --out is the folder for the videos.")
    if out_dir.suffix.lower() == ".mp4":
        raise ValueError(f"--out {str(out_dir)!r} looks like a video file; with --prompts, --out names a folder.")
    digits = max(4, len(str(len(texts) - 1)))
    return [VideoJob(index, text, out_dir / f"{index:0{digits}d}.mp4") for index, text in enumerate(texts)]


def process_state(device: str | None):
    """accelerate's ``PartialState`` of this process and the device it generates on (``device`` or the default).

    A single process without ``accelerate launch`` gets a plain state: no process group, no change. Several
    processes each take their own GPU (``cuda:<local rank>``) unless a ``device`` other than ``cuda`` is given.
    """
    from accelerate import PartialState

    from .utils.dtypes import default_device

    # Without an accelerator (or with device cpu) the processes must talk over gloo, which accelerate only picks
    # when told `cpu=True`; `accelerate launch --cpu` itself starts one process, so `--multi_gpu` is the launcher.
    on_cpu = (device or "").startswith("cpu") or not torch.accelerator.is_available()
    state = PartialState(cpu=on_cpu)
    if state.num_processes > 1 and device in (None, "cuda"):
        device = str(state.device)  # one GPU per process, not all of them on cuda:0
    return state, default_device(device)


def generate_videos(pipe, jobs: Sequence[VideoJob], call: dict, *, fps: float = 8.0, seed: int = 0, state=None,
                    repvideo: bool = True, device: str | None = None) -> list[Path]:
    """Generate this process's share of ``jobs`` with ``pipe(**call)`` and write each as an mp4; returns the paths
    written here. Prints one line per video; ``repvideo`` and ``device`` only word that line."""
    from accelerate import PartialState

    state = state if state is not None else PartialState()
    device = device or str(pipe.device)
    mode = "with RepVideo" if repvideo else "without RepVideo"
    rank = f" [process {state.process_index}/{state.num_processes}]" if state.num_processes > 1 else ""
    requested = call.get("num_frames")
    written = []
    with state.split_between_processes(list(jobs)) as my_jobs:
        for index, prompt, out in my_jobs:
            # Seed by prompt number, not by process: the videos are the same however many processes share them.
            generator = torch.Generator(device="cpu").manual_seed(seed + index)
            started = time.perf_counter()
            frames = pipe(prompt=prompt, generator=generator, **{**call, "output_type": "np"}).frames[0]
            elapsed = time.perf_counter() - started
            _write_mp4(frames, Path(out), fps)
            written.append(Path(out))
            if requested is not None and len(frames) != requested:
                # e.g. CogVideoX 1.0's VAE decodes an even number of latent frames to 4x as many frames
                print(f"note: asked for {requested} frames, the model returned {len(frames)}")
            print(f"wrote {out} ({len(frames)} frames, {frames.shape[2]}x{frames.shape[1]}, {mode}, "
                  f"{elapsed:.1f}s on {device}){rank}", flush=True)
    state.wait_for_everyone()
    return written


def _write_mp4(frames, out: Path, fps: float) -> None:
    """Write ``out`` atomically; an ``out`` without an extension still holds an mp4."""
    from .utils.io import staged_file
    from .utils.video import write_video

    # The writer picks the format by the extension, which such an `out` lacks.
    with staged_file(out, suffix=out.suffix or ".mp4") as staging:
        write_video(frames, staging, fps=fps)

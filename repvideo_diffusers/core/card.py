"""The model card of RepVideo gates, following the Hub's adapter conventions.

The metadata names the base pipeline (``base_model``, only when it is a Hub id, with ``base_model_relation:
adapter``), the task (``pipeline_tag``: ``text-to-video`` or ``image-to-video``), the tags ``repvideo`` and the model
family, and the paper (``arxiv:2501.08994``). The usage snippet loads the base pipeline first, enables the gates and
writes a video; its one line ``base = "..."`` names the base pipeline, and the rest runs as written on any supported
pipeline.

Example:
    ```python
    >>> from repvideo_diffusers import RepVideoGates
    >>> from repvideo_diffusers.core.card import gates_card
    >>> card = gates_card(RepVideoGates(num_blocks=4, model_family="CogVideoX", base_model="THUDM/CogVideoX-2b"),
    ...                   gates_id="me/cogvideox-2b-gates")
    >>> card.data.base_model, card.data.base_model_relation, card.data.pipeline_tag
    ('THUDM/CogVideoX-2b', 'adapter', 'text-to-video')
    >>> 'pipe.enable_repvideo("me/cogvideox-2b-gates")' in card.text
    True

    ```
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

LIBRARY_NAME = "repvideo-diffusers"
PAPER = "2501.08994"
PIPELINE_TAGS = ("text-to-video", "image-to-video")
BASE_PLACEHOLDER = "<base pipeline: Hub id or local folder>"
_BASE_COMMENT = "  # the base pipeline: a Hub id or a local pipeline folder"


def hub_id(name: str | os.PathLike | None) -> str | None:
    """``name`` if it is a Hub repo id, else ``None``: a path that exists here, an absolute path or anything that is
    not of the form ``owner/name`` (`huggingface_hub.utils.validate_repo_id`, with an owner as ``repvideo generate
    --model`` asks: a bare name such as the embedded ``repvideo-tiny-cogvideox`` names no Hub model) is not one.

    Example:
        ```python
        >>> from repvideo_diffusers.core.card import hub_id
        >>> hub_id("THUDM/CogVideoX-2b"), hub_id("/home/me/.cache/repvideo-tiny"), hub_id("a/b/c")
        ('THUDM/CogVideoX-2b', None, None)

        ```
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or not isinstance(name, str) or name.count("/") != 1 or os.path.isabs(name) or os.path.exists(name):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def pipeline_tag_of(pipeline_class_name: str | None) -> str:
    """The Hub ``pipeline_tag`` of gates used with a pipeline class: ``image-to-video`` for image-conditioned
    pipelines (``...ImageToVideoPipeline``, ``...I2V...``), else ``text-to-video``.

    Example:
        ```python
        >>> from repvideo_diffusers.core.card import pipeline_tag_of
        >>> pipeline_tag_of("CogVideoXImageToVideoPipeline"), pipeline_tag_of("WanPipeline")
        ('image-to-video', 'text-to-video')

        ```
    """
    name = (pipeline_class_name or "").lower()
    return "image-to-video" if any(key in name for key in ("imagetovideo", "image2video", "i2v")) else "text-to-video"


def base_line(base_model: str | None) -> str:
    """The snippet's one line that names the base pipeline (a placeholder when no Hub id is known).

    Example:
        ```python
        >>> from repvideo_diffusers.core.card import base_line
        >>> base_line("THUDM/CogVideoX-2b")
        'base = "THUDM/CogVideoX-2b"  # the base pipeline: a Hub id or a local pipeline folder'

        ```
    """
    return f"base = {json.dumps(base_model or BASE_PLACEHOLDER)}{_BASE_COMMENT}"


def usage_snippet(base_model: str | None, gates_id: str, pipeline_tag: str = "text-to-video") -> str:
    """The Python of a gates model card: load the base pipeline, enable these gates, generate, write an mp4.

    Example:
        ```python
        >>> from repvideo_diffusers.core.card import usage_snippet
        >>> print(usage_snippet("THUDM/CogVideoX-2b", "me/gates").splitlines()[-3])
        pipe.enable_repvideo("me/gates")

        ```
    """
    image = pipeline_tag == "image-to-video"
    lines = [
        "import torch",
        "from diffusers import DiffusionPipeline",
        "from diffusers.utils import export_to_video" + (", load_image" if image else ""),
        "",
        "import repvideo_diffusers  # adds enable_repvideo() to every diffusers pipeline",
        "from repvideo_diffusers.generation import default_call  # the text length the model was built for",
        "",
        base_line(base_model),
        'device = "cuda" if torch.cuda.is_available() else "cpu"',
        'dtype = torch.bfloat16 if device == "cuda" else torch.float32',
        "pipe = DiffusionPipeline.from_pretrained(base, dtype=dtype).to(device)",
        f"pipe.enable_repvideo({json.dumps(gates_id)})",
    ]
    if image:
        lines += [
            'image = load_image("https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/'
            'diffusers/astronaut.jpg")',
            'video = pipe(image=image, prompt="an astronaut waving", **default_call(pipe)).frames[0]',
        ]
    else:
        lines.append('video = pipe("a panda playing guitar in a bamboo forest", **default_call(pipe)).frames[0]')
    lines.append('export_to_video(video, "repvideo.mp4", fps=8)')
    return "\n".join(lines)


def gates_reference(save_directory: str | os.PathLike) -> str:
    """How a card's snippet names gates saved in ``save_directory`` when no Hub id is given: the folder's name, or
    for gates in a ``repvideo/`` (``repvideo_2/``) folder, the name of the folder that holds it (a pipeline or a
    training run), from which `enable_repvideo` reads them. diffusers' training scripts name the repo after the
    output folder too.

    Example:
        ```python
        >>> from repvideo_diffusers.core.card import gates_reference
        >>> gates_reference("runs/my-gates"), gates_reference("/data/my-pipeline/repvideo_2")
        ('my-gates', 'my-pipeline')

        ```
    """
    path = Path(os.path.abspath(save_directory))
    in_a_gates_subfolder = re.fullmatch(r"repvideo(_\d+)?", path.name) is not None
    return (path.parent if in_a_gates_subfolder else path).name


def gates_card(gates, extra_text: str = "", gates_id: str | None = None) -> ModelCard:
    """The model card of ``gates`` (`RepVideoGates`), made with huggingface_hub's `ModelCard` / `ModelCardData`;
    ``gates_id`` is what the snippet loads (a Hub id or folder)."""
    config = gates.config
    base_model = hub_id(config.base_model)
    pipeline_tag = config.pipeline_tag or "text-to-video"
    family = [config.model_family.lower()] if config.model_family else []
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        base_model=base_model,
        pipeline_tag=pipeline_tag,
        tags=["repvideo", *family, pipeline_tag, "diffusers", f"arxiv:{PAPER}"],
        license="apache-2.0",
    )
    if base_model:  # an extra field of `ModelCardData`; without a base model it means nothing
        card_data.base_model_relation = "adapter"
    values = ", ".join(f"{v:.4f}" for v in gates.gate.detach().float().cpu().tolist())
    base = f"[`{base_model}`](https://huggingface.co/{base_model})" if base_model else "a"
    snippet = usage_snippet(base_model, gates_id or "<these gates: Hub id or folder>", pipeline_tag)
    text = f"""---
{card_data.to_yaml()}
---

# RepVideo gates

Learned gates of [RepVideo](https://arxiv.org/abs/{PAPER}) (cross-layer feature cache) for {base}
{config.model_family or "video"} transformer: {config.num_blocks} blocks, feature-cache window {config.window}.
They are an adapter: the base pipeline's weights stay as they are, and these {config.num_blocks} numbers decide how
much of the feature cache each block reads.

## Use

```python
{snippet}
```

Put this folder as `repvideo/` inside a pipeline folder and plain `pipe.enable_repvideo()` loads it.

## Gate values (execution order)

`[{values}]`
{extra_text}"""
    return ModelCard(text)

"""RepVideo gates as a small Hub artefact: one scalar per transformer block, saved like a peft adapter.

A gates folder holds ``config.json`` (block count, window, model family, base model),
``diffusion_pytorch_model.safetensors`` (the ``gate`` vector) and a model card ``README.md`` that follows the Hub's
adapter conventions (``base_model`` with ``base_model_relation: adapter``, a ``pipeline_tag``, a usage snippet that
loads the base pipeline first). Inside a pipeline folder the gates live in ``repvideo/`` beside ``transformer/``;
a transformer saved on its own keeps them in ``repvideo/`` inside its folder.

The base model is recorded only when it is a Hub id: a pipeline loaded from a local folder (the embedded tiny
model, a converted checkpoint) leaves ``base_model`` out rather than writing a path of this machine.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.utils import logging
from huggingface_hub import ModelCard

from .. import _compat
from .card import LIBRARY_NAME, PIPELINE_TAGS, gates_card, gates_reference, hub_id  # noqa: F401 - LIBRARY_NAME re-exported
from .config import RepVideoConfig

logger = logging.get_logger(__name__)

GATES_SUBFOLDER = "repvideo"
_CONFIG_FILE = "config.json"


class RepVideoGates(ModelMixin, ConfigMixin):
    r"""The learned gates of RepVideo: ``gate[i]`` weighs the feature-cache mean before block ``i``.

    Args:
        num_blocks (`int`): number of transformer blocks (execution order), one gate each.
        window (`int`, defaults to 6): feature-cache window the gates were trained with.
        gate_init (`float`, defaults to 0.5): initial gate value.
        model_family (`str`, *optional*): the family name (`Family.name`); checked when the gates are attached.
        base_model (`str`, *optional*): Hub id of the base pipeline, recorded in the model card; anything that is
            not a Hub id (a local folder) is not recorded.
        pipeline_tag (`str`, *optional*): ``text-to-video`` (default in the card) or ``image-to-video``.

    Example:
        ```python
        >>> import tempfile
        >>> from repvideo_diffusers import RepVideoGates

        >>> gates = RepVideoGates(num_blocks=4, window=2, gate_init=0.25, model_family="CogVideoX")
        >>> folder = tempfile.mkdtemp()
        >>> gates.save_pretrained(folder)
        >>> RepVideoGates.from_pretrained(folder).gate.tolist()
        [0.25, 0.25, 0.25, 0.25]

        ```
    """

    config_name = _CONFIG_FILE
    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        num_blocks: int,
        window: int = 6,
        gate_init: float = 0.5,
        model_family: str | None = None,
        base_model: str | None = None,
        pipeline_tag: str | None = None,
    ):
        super().__init__()
        RepVideoConfig(window=window, gate_init=gate_init)  # same validation, same messages
        if pipeline_tag is not None and pipeline_tag not in PIPELINE_TAGS:
            raise ValueError(f"pipeline_tag must be one of {PIPELINE_TAGS}, got {pipeline_tag!r}.")
        if num_blocks < 1:
            raise ValueError(f"RepVideoGates needs num_blocks >= 1 (one gate per transformer block), got {num_blocks}.")
        self.gate = torch.nn.Parameter(torch.full((num_blocks,), float(gate_init)))

    def register_to_config(self, **kwargs):
        """`ConfigMixin.register_to_config`, except that a ``base_model`` that is not a Hub id is recorded as
        ``None``: a local folder is no base model on the Hub, and its path says where this machine keeps files."""
        if kwargs.get("base_model") and hub_id(kwargs["base_model"]) is None:
            logger.info(f"base_model {kwargs['base_model']!r} is not a Hub id: the gates record no base model.")
            kwargs["base_model"] = None
        super().register_to_config(**kwargs)

    def forward(self, index: int | None = None) -> torch.Tensor:
        """The gate of block `index` (a 0-dim view), or the whole vector."""
        return self.gate if index is None else self.gate[index]

    @classmethod
    def from_config_and_transformer(
        cls, config: RepVideoConfig, num_blocks: int, family: str | None = None, base_model: str | None = None,
        pipeline_tag: str | None = None,
    ) -> "RepVideoGates":
        return cls(
            num_blocks=num_blocks,
            window=config.window,
            gate_init=config.gate_init,
            model_family=family,
            base_model=hub_id(base_model),
            pipeline_tag=pipeline_tag,
        )

    def model_card(self, extra_text: str = "", gates_id: str | None = None) -> ModelCard:
        """The model card written by `save_pretrained`, made with huggingface_hub's `ModelCard`: Hub adapter
        metadata and a usage snippet that runs as written (``gates_id``: what the snippet loads, the Hub id or the
        folder name; ``base = ...`` names the base pipeline, a placeholder when no Hub id is known).

        Example:
            ```python
            >>> from repvideo_diffusers import RepVideoGates
            >>> gates = RepVideoGates(num_blocks=4, model_family="CogVideoX", base_model="/home/me/tiny-pipeline")
            >>> card = gates.model_card(gates_id="me/gates")
            >>> card.data.base_model is None and "base_model_relation" not in card.data.to_dict()
            True

            ```
        """
        return gates_card(self, extra_text, gates_id)

    def save_pretrained(self, save_directory: str | os.PathLike, model_card_text: str = "",
                        repo_id: str | None = None, **kwargs) -> None:
        """Save config, safetensors weights and a model card (``README.md``) into `save_directory`; the card's
        snippet loads `repo_id` (default: the folder's name, or the pipeline folder's for gates saved inside one)."""
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)
        _forget_local_origin(Path(save_directory) / _CONFIG_FILE)
        self.model_card(model_card_text, gates_id=repo_id or gates_reference(save_directory)).save(
            os.path.join(save_directory, "README.md"))

    def push_to_hub(self, repo_id: str, commit_message: str = "Upload RepVideo gates", private: bool | None = None,
                    token: str | None = None, **kwargs) -> str:
        """Upload the gates (with their model card) to the Hub; returns the commit URL."""
        from huggingface_hub import create_repo, upload_folder

        repo_id = create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        with tempfile.TemporaryDirectory() as folder:
            self.save_pretrained(folder, repo_id=repo_id)
            return upload_folder(repo_id=repo_id, folder_path=folder, commit_message=commit_message, token=token,
                                 **kwargs)


def _forget_local_origin(config_file: Path) -> None:
    """Drop the folder the gates were loaded from (diffusers writes it into a re-saved ``config.json``) when it is a
    local path: a Hub artefact should not say where this machine keeps its files."""
    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text())
    origin = config.get("_name_or_path")
    if origin is not None and hub_id(origin) is None:
        del config["_name_or_path"]
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def gates_subfolder(component: str = "transformer") -> str:
    """Where a pipeline folder keeps the gates of one transformer component: ``transformer`` -> ``repvideo``,
    ``transformer_2`` -> ``repvideo_2`` (Wan 2.2 A14B's second expert)."""
    if not component.startswith("transformer"):
        raise ValueError(f"expected a transformer component name like 'transformer' or 'transformer_2', got {component!r}.")
    return GATES_SUBFOLDER + component[len("transformer"):]


def _transformer_component(name_or_path: str | None) -> str | None:
    """``.../transformer_2`` -> ``transformer_2``: the component a transformer was loaded from, if its folder says."""
    name = Path(name_or_path).name if name_or_path else ""
    return name if name.startswith("transformer") else None


def _gates_folder(path: str | os.PathLike, subfolder: str = GATES_SUBFOLDER) -> Path | None:
    """A local gates folder at `path` or at `path/<subfolder>`, or None."""
    path = Path(path)
    for candidate in (path, path / subfolder):
        if (candidate / _CONFIG_FILE).is_file() and _is_gates_config(candidate / _CONFIG_FILE):
            return candidate
    return None


def is_gates_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` itself is a folder of saved gates (not a pipeline folder that holds some)."""
    return (Path(path) / _CONFIG_FILE).is_file() and _is_gates_config(Path(path) / _CONFIG_FILE)


def _is_gates_config(config_file: Path) -> bool:
    try:
        return json.loads(config_file.read_text()).get("_class_name") == RepVideoGates.__name__
    except (OSError, ValueError):
        return False


def load_gates(path_or_repo: str | os.PathLike, subfolder: str = GATES_SUBFOLDER, **kwargs) -> RepVideoGates:
    """Load gates from a local folder (gates folder or pipeline folder with `repvideo/`) or a Hub id.

    Args:
        subfolder: where a pipeline folder keeps them (``repvideo_2`` for a second transformer).

    Raises `ValueError` when the folder holds something else, naming what was found.
    """
    local = Path(path_or_repo)
    if local.exists():
        folder = _gates_folder(local, subfolder)
        if folder is None:
            found = sorted(p.name for p in local.iterdir()) if local.is_dir() else [local.name]
            raise ValueError(
                f"{str(local)!r} is not a RepVideo gates folder: expected '{_CONFIG_FILE}' with "
                f"\"_class_name\": \"RepVideoGates\" (here or in '{subfolder}/'), found {found}. "
                "Save gates with `gates.save_pretrained(folder)` or point at the folder that holds them."
            )
        try:
            return RepVideoGates.from_pretrained(folder, **kwargs)
        except (OSError, RuntimeError) as error:
            raise ValueError(f"Could not load RepVideo gates from {str(folder)!r}: {error}") from error
    # A Hub id: gates at the repo root or under repvideo/.
    from huggingface_hub import hf_hub_download

    for where in (None, subfolder):
        try:
            config_file = hf_hub_download(str(path_or_repo), _CONFIG_FILE, subfolder=where)
        except Exception:  # noqa: BLE001 - offline, missing repo or missing file: try the next place
            continue
        if _is_gates_config(Path(config_file)):
            return RepVideoGates.from_pretrained(str(path_or_repo), subfolder=where, **kwargs)
    raise ValueError(
        f"No RepVideo gates found at {str(path_or_repo)!r}: it is neither a local folder nor a reachable Hub repo "
        f"with RepVideo gates (at the root or in '{subfolder}/'). Check the path, or unset HF_HUB_OFFLINE."
    )


def find_saved_gates(transformer: torch.nn.Module, pipeline_path: str | os.PathLike | None = None,
                     subfolder: str | None = None) -> RepVideoGates | None:
    """Gates saved with the model, if any: `<pipeline>/repvideo/` beside `transformer/` (`repvideo_2/` beside
    `transformer_2/`); `subfolder` overrides the folder name read off where the transformer was loaded from."""
    name_or_path = _compat.name_or_path(transformer)
    component = _transformer_component(name_or_path)
    subfolder = subfolder or gates_subfolder(component or "transformer")
    candidates = []
    if pipeline_path:
        candidates.append(str(pipeline_path))
    if name_or_path:
        candidates.append(str(name_or_path))
        if component:
            candidates.append(str(Path(name_or_path).parent))
    for candidate in dict.fromkeys(candidates):
        if Path(candidate).exists():
            folder = Path(candidate) / subfolder
            if folder.is_dir():
                return load_gates(folder)
            continue
        if os.environ.get("HF_HUB_OFFLINE", "0").upper() in ("1", "ON", "YES", "TRUE"):
            continue
        try:
            return load_gates(candidate, subfolder=subfolder)
        except ValueError:
            continue
    return None


def gate_dtype(transformer: torch.nn.Module) -> torch.dtype:
    """The dtype the gates take on `transformer`: the model's dtype (`ModelMixin.dtype`, which skips modules kept in
    float32 such as Wan's ``scale_shift_table`` and gives the compute dtype under layerwise casting), else that of
    its first parameter held in a compute dtype (float32, bfloat16, float16, float64). Quantized storage
    (bitsandbytes' int8 / uint8 weights, float8) is never taken, so the gates stay a learnable floating-point
    vector; float32 if no parameter qualifies.

    Example:
        ```python
        >>> import torch
        >>> from repvideo_diffusers.core.gates import gate_dtype
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.LayerNorm(2))
        >>> _ = model[0].to(torch.float8_e4m3fn)
        >>> gate_dtype(model)
        torch.float32

        ```
    """
    compute = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
    model_dtype = getattr(transformer, "dtype", None) if isinstance(transformer, ModelMixin) else None
    if model_dtype in compute:
        return model_dtype
    return next((p.dtype for p in transformer.parameters() if p.dtype in compute), torch.float32)


def resolve_gates(config_or_weights, transformer: torch.nn.Module, num_blocks: int, family: str,
                  pipeline_path: str | os.PathLike | None = None, subfolder: str | None = None,
                  pipeline_tag: str | None = None) -> RepVideoGates:
    """Turn `apply_repvideo`'s `config_or_weights` into gates that fit `transformer` (or raise `ValueError`).

    ``subfolder``: where a pipeline folder keeps this transformer's gates (default: read off where it was loaded).
    ``pipeline_path`` / ``pipeline_tag``: the pipeline's Hub id (recorded as the base model of fresh gates) and
    task, when a pipeline asks.
    """
    base_model = _compat.name_or_path(transformer)
    if _transformer_component(base_model):  # loaded from a pipeline: name the pipeline
        base_model = str(Path(base_model).parent)
    # A pipeline loaded from the Hub knows its id; its transformer only knows the local snapshot it was read from.
    base_model = hub_id(str(pipeline_path) if pipeline_path else None) or hub_id(base_model)
    if isinstance(config_or_weights, RepVideoGates):
        gates = config_or_weights
    elif isinstance(config_or_weights, RepVideoConfig):
        return RepVideoGates.from_config_and_transformer(config_or_weights, num_blocks, family, base_model,
                                                         pipeline_tag)
    elif config_or_weights is None:
        gates = find_saved_gates(transformer, pipeline_path, subfolder)
        if gates is None:
            logger.info("No saved RepVideo gates found with the model: using fresh gates from RepVideoConfig().")
            return RepVideoGates.from_config_and_transformer(RepVideoConfig(), num_blocks, family, base_model,
                                                             pipeline_tag)
    elif isinstance(config_or_weights, (str, os.PathLike)):
        gates = load_gates(config_or_weights, subfolder=subfolder or GATES_SUBFOLDER)
    else:
        raise ValueError(
            "config_or_weights must be a RepVideoConfig, a gates folder / Hub id, RepVideoGates or None; "
            f"got {type(config_or_weights).__name__}."
        )
    if gates.config.num_blocks != num_blocks:
        raise ValueError(
            f"These RepVideo gates were saved for a model with {gates.config.num_blocks} blocks "
            f"({gates.config.model_family or 'unknown family'}), but this {family} transformer has {num_blocks} blocks. "
            "Load gates trained for this model, or start fresh with a RepVideoConfig."
        )
    if gates.config.model_family and gates.config.model_family != family:
        raise ValueError(
            f"These RepVideo gates were saved for a {gates.config.model_family} model, but this transformer is "
            f"{family}. Load gates trained for {family}, or start fresh with a RepVideoConfig."
        )
    return gates

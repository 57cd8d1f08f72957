"""Finding and safely loading a SwissArmyTransformer (SAT) checkpoint.

A SAT checkpoint folder holds ``latest`` (the iteration number) and ``<iteration>/mp_rank_00_model_states.pt``; a
download folder may hold such a folder one level down. The model-states file is memory-mapped and loaded with
torch's safe (``weights_only``) unpickler unless the caller trusts the file.

Example:
    ```python
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from repvideo_diffusers.convert.sat_io import SAT_MODEL_FILE, load_sat_state_dict, resolve_sat_file
    >>> folder = Path(tempfile.mkdtemp())
    >>> (folder / "100").mkdir()
    >>> _ = (folder / "latest").write_text("100")
    >>> torch.save({"module": {"w": torch.zeros(2)}}, folder / "100" / SAT_MODEL_FILE)
    >>> resolve_sat_file(folder).relative_to(folder).as_posix()
    '100/mp_rank_00_model_states.pt'
    >>> load_sat_state_dict(folder)
    {'w': tensor([0., 0.])}

    ```
"""

from __future__ import annotations

import argparse
import os
import pickle
from pathlib import Path

import torch
from diffusers.utils import logging

logger = logging.get_logger(__name__)

SAT_MODEL_FILE = "mp_rank_00_model_states.pt"


def resolve_sat_file(sat_path: str | os.PathLike) -> Path:
    """The model-states file of a SAT checkpoint folder (``latest`` + ``<iteration>/mp_rank_00_model_states.pt``) or
    the given ``.pt`` file itself."""
    path = Path(sat_path)
    if path.is_file():
        return path
    if not path.exists():
        raise FileNotFoundError(
            f"SAT checkpoint {str(path)!r} does not exist. Pass a SAT checkpoint folder (with a 'latest' file and "
            f"'<iteration>/{SAT_MODEL_FILE}') or a single .pt file."
        )
    latest = path / "latest"
    if not latest.is_file() and len(nested := sorted(path.glob("*/latest"))) == 1:
        latest, path = nested[0], nested[0].parent  # a download folder that holds the checkpoint folder
    if latest.is_file():
        iteration = latest.read_text().strip()
        candidate = path / iteration / SAT_MODEL_FILE
        if candidate.is_file():
            return candidate
        raise FileNotFoundError(
            f"{str(latest)!r} names iteration {iteration!r}, but {str(candidate)!r} does not exist "
            f"(found {sorted(p.name for p in path.iterdir())}). Fix 'latest' or point at the .pt file directly."
        )
    found = sorted(path.glob(f"*/{SAT_MODEL_FILE}")) + sorted(path.glob(SAT_MODEL_FILE))
    if len(found) == 1:
        return found[0]
    if len(list(path.glob("**/mp_rank_0[1-9]_model_states.pt"))):
        raise ValueError(
            f"{str(path)!r} holds a model-parallel SAT checkpoint (several mp_rank_* files). Only single-rank "
            f"checkpoints ({SAT_MODEL_FILE}) are supported: merge the ranks in SAT first."
        )
    raise FileNotFoundError(
        f"{str(path)!r} is not a SAT checkpoint folder: expected a 'latest' file and '<iteration>/{SAT_MODEL_FILE}', "
        f"found {sorted(p.name for p in path.iterdir())}{' (several candidates)' if found else ''}. "
        "Point --sat at the checkpoint folder or at the .pt file."
    )


def _torch_load(file: Path, mmap: bool, weights_only: bool):
    if weights_only:
        # argparse.Namespace (SAT's saved args) is plain data: safe to allow.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(file, map_location="cpu", mmap=mmap, weights_only=True)
    return torch.load(file, map_location="cpu", mmap=mmap, weights_only=False)


def _check_torch_file(file: Path) -> None:
    """Refuse a file that is neither a zip (torch >= 1.6) nor a pickle (legacy torch): text, a truncated download."""
    import zipfile

    with open(file, "rb") as handle:
        head = handle.read(2)
    if not zipfile.is_zipfile(file) and head[:1] != b"\x80":
        found = "a truncated zip archive" if head == b"PK" else f"a file starting with {head!r}"
        raise ValueError(f"Could not read SAT checkpoint {str(file)!r}: it is {found}, not a torch checkpoint. The "
                         "file is corrupt, truncated or not a torch checkpoint; download or copy it again.")


def _load_saved_object(file: Path, allow_unsafe_pickle: bool):
    """``torch.load`` of the whole file, memory-mapped where the format allows; every failure as a ValueError."""
    _check_torch_file(file)
    try:
        try:
            return _torch_load(file, mmap=True, weights_only=not allow_unsafe_pickle)
        except RuntimeError as error:
            if "_use_new_zipfile_serialization" not in str(error):
                raise
            # Legacy (pre-zip) torch files cannot be memory-mapped: read them whole.
            logger.warning(f"{file} is a legacy torch file that cannot be memory-mapped; loading it into memory.")
            return _torch_load(file, mmap=False, weights_only=not allow_unsafe_pickle)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{str(file)!r} pickles Python objects that torch's safe loader refuses ({str(error).splitlines()[0]}). "
            "If you trust this file, pass --allow-unsafe-pickle (Python: allow_unsafe_pickle=True); unpickling an "
            "untrusted file can run arbitrary code."
        ) from error
    except Exception as error:  # noqa: BLE001 - torch raises many types for damaged files; all mean the same here
        raise ValueError(
            f"Could not read SAT checkpoint {str(file)!r}: {str(error).splitlines()[0] if str(error) else type(error).__name__}. "
            "The file is corrupt, truncated or not a torch checkpoint; download or copy it again."
        ) from error


def load_sat_state_dict(sat_path: str | os.PathLike, allow_unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The flat state dict of a SAT checkpoint (under ``module``, ``model`` or ``state_dict``), memory-mapped.

    Loads with ``weights_only=True``: a checkpoint that also pickles Python objects (training args, optimizer
    classes) is refused with an error naming the object, unless ``allow_unsafe_pickle=True`` (only for files you
    trust: unpickling can run code).
    """
    file = resolve_sat_file(sat_path)
    saved = _load_saved_object(file, allow_unsafe_pickle)
    state = saved
    for key in ("module", "model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        found = sorted(saved)[:10] if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(
            f"{str(file)!r} holds no state dict of tensors under 'module', 'model' or 'state_dict' (found {found}). "
            "Point at a SAT model-states file."
        )
    return state

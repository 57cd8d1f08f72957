"""Convert RepVideo checkpoints between SwissArmyTransformer (SAT) and diffusers: ``repvideo convert`` / ``export-sat``.

The official RepVideo model (Hub ``Vchitect/RepVideo``) is a CogVideoX-2B checkpoint in SAT layout whose transformer
carries one learned gate per block (``transformer.learnable_gating``). diffusers' own SAT script loads strictly and
knows no rule for that gate, so it cannot convert it. This package can:

* `convert_sat_checkpoint`: SAT folder or ``.pt`` file -> ``transformer/`` (diffusers, safetensors) + ``repvideo/``
  (our gates), optionally completed into a whole pipeline folder from a base pipeline.
* `export_sat`: a diffusers ``CogVideoXTransformer3DModel`` + gates -> the SAT layout the official code loads.

Modules:

* ``keymap``: the one table both directions read (``_RULES``): each SAT module maps to one or more diffusers modules,
  by a plain copy, by splitting the fused q/k/v projection, or by regrouping the twelve adaLN chunks.
* ``sat_io``: finding the model-states file of a SAT checkpoint folder and loading it memory-mapped and safely.
* ``transformer_config``: the transformer config read off the tensor shapes; what shapes cannot tell (text length,
  sample size) comes from the variant defaults, the base pipeline's transformer config, or ``config=``.
* ``to_diffusers``: `convert_sat_checkpoint`. Strict (missing or unexpected keys raise an error that lists them,
  before anything is written) and memory-lean (the SAT file is memory-mapped and the output written shard by shard).
* ``to_sat``: `export_sat`.

The command-line side (``repvideo convert`` / ``repvideo export-sat``) is `repvideo_diffusers.cli.convert`.
"""

from .keymap import SAT_GATE_KEY, SAT_PREFIX, SAT_WINDOW
from .sat_io import SAT_MODEL_FILE, load_sat_state_dict, resolve_sat_file
from .to_diffusers import DEFAULT_MAX_SHARD_SIZE, ConversionResult, convert_sat_checkpoint
from .to_sat import export_sat
from .transformer_config import infer_transformer_config

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "SAT_GATE_KEY",
    "SAT_MODEL_FILE",
    "SAT_PREFIX",
    "SAT_WINDOW",
    "ConversionResult",
    "convert_sat_checkpoint",
    "export_sat",
    "infer_transformer_config",
    "load_sat_state_dict",
    "resolve_sat_file",
]

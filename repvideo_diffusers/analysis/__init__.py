"""The RepVideo paper's diagnostics as tools: ``repvideo_diffusers.analysis`` and ``repvideo analyze``.

The paper (arXiv 2501.08994, Sec. 3) motivates the feature cache with two measurements on a video DiT, and the
learned gates are the third thing worth looking at:

* **cross-layer attention-map similarity**: a layer x layer cosine-similarity matrix of the attention maps, per
  denoising step. Attention is recorded with `repvideo_diffusers.attention.capture_attention` for one query token
  per latent frame, so no N x N map is ever built;
* **adjacent-frame feature similarity**: after each block, the mean cosine similarity between the features of
  neighbouring latent frames at the same spatial position (higher = more temporally coherent features);
* **the gate per block** of the RepVideo run.

`analyze` runs the pipeline without and with RepVideo from the same seed and returns every number as a plain,
JSON-ready dict; `save_report` writes ``analysis.json`` plus three PNG figures.

Modules: `metrics` (the measurements and the hooks recording them), `report` (`analyze`, `save_report`), `plots`
(the figures). The command line is `repvideo_diffusers.cli.analyze`.

Example:
    ```python
    >>> import tempfile
    >>> from repvideo_diffusers.analysis import analyze, save_report
    >>> from repvideo_diffusers.tiny import load_tiny_pipeline
    >>> report = analyze(load_tiny_pipeline(), "a fox in snow", num_inference_steps=2,
    ...                  max_sequence_length=16, progress=False)
    >>> len(report["runs"]["repvideo"]["attention_similarity"])  # one 4 x 4 matrix per step
    2
    >>> sorted(p.name for p in save_report(report, tempfile.mkdtemp()))
    ['analysis.json', 'attention_similarity.png', 'frame_similarity.png', 'gates.png']
    ```
"""

from .metrics import adjacent_frame_similarity, attention_similarity, diagnose_transformer
from .plots import plot_attention_similarity, plot_frame_similarity, plot_gates
from .report import DEFAULT_PROMPT, FIGURES, REPORT_VERSION, analyze, format_summary, save_report

__all__ = [
    "DEFAULT_PROMPT",
    "FIGURES",
    "REPORT_VERSION",
    "adjacent_frame_similarity",
    "analyze",
    "attention_similarity",
    "diagnose_transformer",
    "format_summary",
    "plot_attention_similarity",
    "plot_frame_similarity",
    "plot_gates",
    "save_report",
]

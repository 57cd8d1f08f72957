"""`repvideo generate` and `repvideo analyze` on pipelines that set guidance through a guider and take no
`max_sequence_length` (HunyuanVideo-1.5, Motif-Video): the call is put in each pipeline's own words."""

import json

import pytest

from repvideo_diffusers.cli import main
from repvideo_diffusers.utils.video import read_video

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.slow
@pytest.mark.parametrize("builder", ["hunyuan_video15_pipeline", "motif_pipeline"])
def test_generate_and_analyze_run_on_guider_pipelines(builder, tmp_path, capsys):
    import tiny_pipelines_hunyuan

    pipe = getattr(tiny_pipelines_hunyuan, builder)()
    pipe.save_pretrained(tmp_path / "model")
    size = ["--height", "32", "--width", "32", "--steps", "2", "--frames", "5", "--guidance-scale", "3"]
    assert main(["generate", "a fox", "--model", str(tmp_path / "model"), *size, "--out", str(tmp_path / "a.mp4")]) == 0
    frames, _ = read_video(tmp_path / "a.mp4")
    assert frames.shape[0] == 5 and frames.shape[1:3] == (32, 32)
    assert main(["analyze", "a fox", "--model", str(tmp_path / "model"), *size,
                 "--out", str(tmp_path / "analysis")]) == 0
    report = json.loads((tmp_path / "analysis" / "analysis.json").read_text())
    assert set(report["runs"]) == {"base", "repvideo"}
    steps = report["runs"]["repvideo"]["frame_similarity"]
    assert len(steps) >= 2 and all(len(step) == len(report["layers"]) for step in steps)
    assert "with RepVideo" in capsys.readouterr().out

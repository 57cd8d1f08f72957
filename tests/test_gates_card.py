"""Gates model cards follow the Hub's adapter conventions, record only Hub ids as base model, and carry a usage
snippet that runs as written (issue 13, item 6)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import CogVideoXPipeline
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.utils import validate_repo_id

from repvideo_diffusers import RepVideoConfig, RepVideoGates
from repvideo_diffusers.core.card import BASE_PLACEHOLDER, base_line, hub_id, pipeline_tag_of

ROOT = Path(__file__).resolve().parents[1]


def load_card(folder) -> ModelCard:
    card = ModelCard.load(Path(folder) / "README.md")
    # huggingface_hub's own card data class must accept the metadata as it stands, strictly.
    ModelCardData(**card.data.to_dict(), ignore_metadata_errors=False)
    return card


def snippet_of(card: ModelCard) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    assert len(blocks) == 1, blocks
    return blocks[0]


def as_hub_pipeline(pipe, repo_id):
    """The tiny pipeline as if `from_pretrained(repo_id)` had loaded it: the pipeline records the Hub id, while its
    transformer records the local folder it was read from (a Hub snapshot)."""
    pipe.register_to_config(_name_or_path=repo_id)
    return pipe


def test_gates_of_a_hub_pipeline_get_adapter_metadata(tiny_pipe, tmp_path):
    as_hub_pipeline(tiny_pipe, "THUDM/CogVideoX-2b")
    gates = tiny_pipe.enable_repvideo(RepVideoConfig(gate_init=0.3))
    gates.save_pretrained(tmp_path / "gates", repo_id="me/cogvideox-2b-gates")

    card = load_card(tmp_path / "gates")
    data = card.data.to_dict()
    validate_repo_id(data["base_model"])
    assert data["base_model"] == "THUDM/CogVideoX-2b"
    assert data["base_model_relation"] == "adapter"
    assert data["pipeline_tag"] == "text-to-video"
    assert data["library_name"] == "repvideo-diffusers"
    assert {"repvideo", "cogvideox", "arxiv:2501.08994"} <= set(data["tags"])
    assert "https://arxiv.org/abs/2501.08994" in card.text
    assert "[`THUDM/CogVideoX-2b`](https://huggingface.co/THUDM/CogVideoX-2b)" in card.text
    snippet = snippet_of(card)
    assert base_line("THUDM/CogVideoX-2b") in snippet.splitlines()
    assert 'pipe.enable_repvideo("me/cogvideox-2b-gates")' in snippet
    assert json.loads((tmp_path / "gates" / "config.json").read_text())["base_model"] == "THUDM/CogVideoX-2b"


def test_gates_of_a_local_pipeline_record_no_path(tiny_pipe, tiny_pipeline_dir, tmp_path):
    gates = tiny_pipe.enable_repvideo(RepVideoConfig(gate_init=0.3))
    tiny_pipe.save_pretrained(tmp_path / "saved")
    readme = (tmp_path / "saved" / "repvideo" / "README.md").read_text()
    config = (tmp_path / "saved" / "repvideo" / "config.json").read_text()

    assert json.loads(config)["base_model"] is None and gates.config.base_model is None
    for text in (readme, config):
        assert str(tiny_pipeline_dir) not in text and str(tmp_path) not in text
    card = load_card(tmp_path / "saved" / "repvideo")
    assert card.data.base_model is None and "base_model_relation" not in card.data.to_dict()
    assert "huggingface.co/" + str(tiny_pipeline_dir).lstrip("/") not in readme
    assert base_line(None) in snippet_of(card).splitlines()
    # gates inside a pipeline folder: the snippet loads them from that pipeline folder, named as on the Hub
    assert 'pipe.enable_repvideo("saved")' in snippet_of(card)


@pytest.mark.parametrize("name, expected", [
    ("THUDM/CogVideoX-2b", "THUDM/CogVideoX-2b"),
    ("repvideo-tiny-cogvideox", None),  # the embedded tiny model's name: no owner, no Hub model
    ("/root/.cache/repvideo-diffusers/repvideo-tiny-cogvideox-v2", None),
    ("runs/a/b", None),
    ("../pipeline", None),
    ("not a repo", None),
    (None, None),
])
def test_hub_id_accepts_repo_ids_only(name, expected):
    assert hub_id(name) == expected


def test_a_folder_that_exists_here_is_not_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "owner" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert hub_id("owner/model") is None
    assert hub_id("owner/other") == "owner/other"


def test_gates_saved_with_a_local_base_model_load_without_it(tmp_path):
    """Gates written by an earlier version, with a local path as base model, lose it on load and on save."""
    RepVideoGates(num_blocks=4).save_pretrained(tmp_path / "old")
    config_file = tmp_path / "old" / "config.json"
    config = json.loads(config_file.read_text())
    config["base_model"] = str(tmp_path / "my-pipeline")
    config_file.write_text(json.dumps(config))

    loaded = RepVideoGates.from_pretrained(tmp_path / "old")
    assert loaded.config.base_model is None
    loaded.register_to_config(base_model=str(tmp_path))  # what `repvideo train --model <folder>` does
    loaded.save_pretrained(tmp_path / "new")
    assert str(tmp_path) not in (tmp_path / "new" / "config.json").read_text()
    assert str(tmp_path) not in (tmp_path / "new" / "README.md").read_text()


@pytest.mark.parametrize("name, tag", [
    ("CogVideoXPipeline", "text-to-video"),
    ("CogVideoXImageToVideoPipeline", "image-to-video"),
    ("WanImageToVideoPipeline", "image-to-video"),
    ("HunyuanVideoImageToVideoPipeline", "image-to-video"),
    ("LTXPipeline", "text-to-video"),
])
def test_pipeline_tag_is_read_off_the_pipeline_class(name, tag):
    assert pipeline_tag_of(name) == tag


def test_image_to_video_pipeline_gates_get_the_image_to_video_tag_and_snippet(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_pipelines_i2v import cogvideox_i2v_pipeline

    pipe = cogvideox_i2v_pipeline()
    gates = pipe.enable_repvideo(RepVideoConfig())
    gates.save_pretrained(tmp_path / "i2v", repo_id="me/i2v-gates")
    card = load_card(tmp_path / "i2v")
    assert card.data.pipeline_tag == "image-to-video"
    assert "image-to-video" in card.data.tags
    assert "pipe(image=image" in snippet_of(card)


def test_a_bad_pipeline_tag_is_refused():
    with pytest.raises(ValueError, match="pipeline_tag must be one of"):
        RepVideoGates(num_blocks=4, pipeline_tag="video")


@pytest.mark.slow
def test_the_card_snippet_runs_as_written_on_the_tiny_model(tiny_pipe, tiny_pipeline_dir, tmp_path):
    """The snippet of a card made on the tiny pipeline, with only its ``base = ...`` line pointed at the tiny folder,
    generates a video with the saved gates (they lie where the snippet's Hub id names them, relative to the cwd)."""
    gates = tiny_pipe.enable_repvideo(RepVideoConfig(window=2))
    with torch.no_grad():
        gates.gate.fill_(0.3)
    gates.save_pretrained(tmp_path / "me" / "tiny-gates", repo_id="me/tiny-gates")
    snippet = snippet_of(load_card(tmp_path / "me" / "tiny-gates"))

    placeholder = base_line(None)
    assert BASE_PLACEHOLDER in placeholder and snippet.splitlines().count(placeholder) == 1
    runnable = snippet.replace(placeholder, f"base = {json.dumps(str(tiny_pipeline_dir))}")
    runnable += "\nprint('gates', pipe.transformer.repvideo_gates.gate.tolist(), 'frames', len(video))\n"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", runnable], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "gates [0.30000001192092896, 0.30000001192092896, 0.30000001192092896, 0.30000001192092896]" in result.stdout
    assert "frames 9" in result.stdout
    assert (tmp_path / "repvideo.mp4").stat().st_size > 0


def test_the_training_card_names_a_local_base_model_by_folder_name_only(tmp_path):
    from repvideo_diffusers.training.config import TrainConfig, TrainResult
    from repvideo_diffusers.training.outputs import card_text

    result = TrainResult(output_dir=tmp_path / "run", gates_dir=tmp_path / "run" / "repvideo", steps=12,
                         final_loss=0.25, num_samples=3, objective="flow matching")
    local = tmp_path / "models" / "my-cogvideox"
    local.mkdir(parents=True)
    text = card_text(TrainConfig(data="clips/", output_dir=str(tmp_path / "run")), result, str(local))
    assert str(tmp_path) not in text and "`my-cogvideox (a local model)`" in text
    hub = card_text(TrainConfig(data="clips/", output_dir=str(tmp_path / "run")), result, "THUDM/CogVideoX-2b")
    assert "| base model | `THUDM/CogVideoX-2b` |" in hub

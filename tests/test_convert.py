"""SAT <-> diffusers conversion of RepVideo checkpoints (issue 3): `repvideo convert` / `repvideo export-sat`."""

import datetime
import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import CogVideoXPipeline, CogVideoXTransformer3DModel

from repvideo_diffusers import RepVideoGates, apply_repvideo
from repvideo_diffusers.cli import main
from repvideo_diffusers.convert import convert_sat_checkpoint, export_sat
from repvideo_diffusers.testing import TINY_MODELS

P = "model.diffusion_model."


# --- an independent SAT writer: the key map written out by hand from the SAT model code, not via the exporter ---


def sat_state_dict_by_hand(model: CogVideoXTransformer3DModel, gate: torch.Tensor) -> dict:
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {}

    def params(prefix):
        return sorted({k[len(prefix):] for k in sd if k.startswith(prefix) and "." not in k[len(prefix):]})

    for i in range(model.config.num_layers):
        d, s = f"transformer_blocks.{i}.", f"{P}transformer.layers.{i}."
        for p in params(d + "attn1.to_q."):
            out[f"{s}attention.query_key_value.{p}"] = torch.cat(
                [sd[f"{d}attn1.to_q.{p}"], sd[f"{d}attn1.to_k.{p}"], sd[f"{d}attn1.to_v.{p}"]], dim=0)
        for p in params(d + "norm1.linear."):
            # diffusers norm1 = (shift, scale, gate) for video then text attention; norm2 the same for the MLP.
            shift, scale, gate_, t_shift, t_scale, t_gate = sd[f"{d}norm1.linear.{p}"].chunk(6)
            m_shift, m_scale, m_gate, tm_shift, tm_scale, tm_gate = sd[f"{d}norm2.linear.{p}"].chunk(6)
            out[f"{P}mixins.adaln_layer.adaLN_modulations.{i}.1.{p}"] = torch.cat(
                [shift, scale, gate_, m_shift, m_scale, m_gate, t_shift, t_scale, t_gate, tm_shift, tm_scale, tm_gate])
        for sat_name, diffusers_name in [
            (f"{s}attention.dense", f"{d}attn1.to_out.0"),
            (f"{s}input_layernorm", f"{d}norm1.norm"),
            (f"{s}post_attention_layernorm", f"{d}norm2.norm"),
            (f"{s}mlp.dense_h_to_4h", f"{d}ff.net.0.proj"),
            (f"{s}mlp.dense_4h_to_h", f"{d}ff.net.2"),
            (f"{P}mixins.adaln_layer.query_layernorm_list.{i}", f"{d}attn1.norm_q"),
            (f"{P}mixins.adaln_layer.key_layernorm_list.{i}", f"{d}attn1.norm_k"),
        ]:
            for p in params(diffusers_name + "."):
                out[f"{sat_name}.{p}"] = sd[f"{diffusers_name}.{p}"]
    for sat_name, diffusers_name in [
        ("transformer.final_layernorm", "norm_final"),
        ("time_embed.0", "time_embedding.linear_1"),
        ("time_embed.2", "time_embedding.linear_2"),
        ("ofs_embed.0", "ofs_embedding.linear_1"),
        ("ofs_embed.2", "ofs_embedding.linear_2"),
        ("mixins.patch_embed.proj", "patch_embed.proj"),
        ("mixins.patch_embed.text_proj", "patch_embed.text_proj"),
        ("mixins.final_layer.norm_final", "norm_out.norm"),
        ("mixins.final_layer.linear", "proj_out"),
        ("mixins.final_layer.adaLN_modulation.1", "norm_out.linear"),
    ]:
        for p in params(diffusers_name + "."):
            out[f"{P}{sat_name}.{p}"] = sd[f"{diffusers_name}.{p}"]
    config = model.config
    if config.use_learned_positional_embeddings:
        out[f"{P}mixins.pos_embed.pos_embedding"] = sd["patch_embed.pos_embedding"]
    elif config.use_rotary_positional_embeddings:
        out[f"{P}mixins.pos_embed.freqs_sin"] = torch.randn(5, config.attention_head_dim)  # fixed tables, dropped
        out[f"{P}mixins.pos_embed.freqs_cos"] = torch.randn(5, config.attention_head_dim)
    else:
        out[f"{P}mixins.pos_embed.pos_embedding"] = torch.randn(1, 7, config.num_attention_heads * config.attention_head_dim)
    out[f"{P}transformer.learnable_gating"] = gate.detach().clone()
    return out


def write_sat_folder(folder: Path, module: dict, iteration: int = 1000, **extra) -> Path:
    (folder / str(iteration)).mkdir(parents=True)
    torch.save({"module": module, **extra}, folder / str(iteration) / "mp_rank_00_model_states.pt")
    (folder / "latest").write_text(str(iteration))
    return folder


def tiny_gated(seed=0):
    transformer, inputs = TINY_MODELS["CogVideoX"].build(seed)
    n = transformer.config.num_layers
    gates = RepVideoGates(num_blocks=n, window=6, model_family="CogVideoX")
    with torch.no_grad():
        gates.gate.copy_(torch.rand(n, generator=torch.Generator().manual_seed(seed + 7)))
    return transformer, gates, inputs


def gated_output(transformer, gates, inputs):
    apply_repvideo(transformer, gates)
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


def converted_output(out_dir: Path, inputs):
    transformer = CogVideoXTransformer3DModel.from_pretrained(out_dir / "transformer").eval()
    apply_repvideo(transformer, str(out_dir / "repvideo"))
    with torch.no_grad():
        return transformer(**inputs, return_dict=False)[0]


def config_of(model) -> dict:
    return {k: v for k, v in model.config.items() if not k.startswith("_")}


# --- specifications ---


def test_export_sat_then_convert_reproduces_gated_outputs(tmp_path):
    transformer, gates, inputs = tiny_gated()
    export_sat(transformer, gates, tmp_path / "sat")
    convert_sat_checkpoint(tmp_path / "sat", tmp_path / "out", config=config_of(transformer))

    expected = gated_output(transformer, gates, inputs)
    diff = (converted_output(tmp_path / "out", inputs) - expected).abs().max().item()
    assert diff <= 1e-6
    # the gates are not a no-op here, so the comparison covers them: without them the output moves
    transformer.repvideo_gates.gate.data.zero_()
    with torch.no_grad():
        assert (transformer(**inputs, return_dict=False)[0] - expected).abs().max().item() > 1e-3


def test_hand_built_sat_checkpoint_converts_to_the_same_outputs(tmp_path):
    transformer, gates, inputs = tiny_gated(seed=1)
    # DeepSpeed-style extras beside `module`, including SAT's pickled argparse args
    import argparse

    write_sat_folder(tmp_path / "sat", sat_state_dict_by_hand(transformer, gates.gate), iteration=4000,
                     args=argparse.Namespace(num_layers=4), iteration_number=4000)
    result = convert_sat_checkpoint(tmp_path / "sat", tmp_path / "out", config=config_of(transformer))

    assert result.gates == pytest.approx(gates.gate.tolist(), abs=0)
    diff = (converted_output(tmp_path / "out", inputs) - gated_output(transformer, gates, inputs)).abs().max().item()
    assert diff <= 1e-6


def test_sat_checkpoint_is_found_as_folder_parent_folder_or_file(tmp_path, sat_module):
    folder = write_sat_folder(tmp_path / "download" / "RepVideo", sat_module, iteration=7)
    for n, path in enumerate([folder, tmp_path / "download", folder / "7" / "mp_rank_00_model_states.pt"]):
        assert convert_sat_checkpoint(path, tmp_path / f"out{n}").num_layers == 4
    (folder / "latest").write_text("8")
    with pytest.raises(FileNotFoundError, match="names iteration '8'.*does not exist"):
        convert_sat_checkpoint(folder, tmp_path / "out9")


def test_gates_model_card_names_the_sat_source(tmp_path):
    transformer, gates, _ = tiny_gated()
    write_sat_folder(tmp_path / "sat", sat_state_dict_by_hand(transformer, gates.gate))
    convert_sat_checkpoint(tmp_path / "sat", tmp_path / "out", config=config_of(transformer))
    card = (tmp_path / "out" / "repvideo" / "README.md").read_text()
    assert str(tmp_path / "sat") in card and "learnable_gating" in card
    assert json.loads((tmp_path / "out" / "repvideo" / "config.json").read_text())["window"] == 6


def test_transformer_config_is_read_off_tensor_shapes(tmp_path):
    transformer, gates, _ = tiny_gated()
    write_sat_folder(tmp_path / "sat", sat_state_dict_by_hand(transformer, gates.gate))
    convert_sat_checkpoint(tmp_path / "sat", tmp_path / "out")  # no config: only shapes
    written = json.loads((tmp_path / "out" / "transformer" / "config.json").read_text())
    for field in ("num_layers", "num_attention_heads", "attention_head_dim", "in_channels", "out_channels",
                  "patch_size", "text_embed_dim", "time_embed_dim", "use_rotary_positional_embeddings"):
        assert written[field] == transformer.config[field], field
    assert written["max_text_seq_length"] == 226  # not in any shape: CogVideoX's default unless --config says


VARIANTS = {
    # CogVideoX-5B: rotary positions (freqs_sin / freqs_cos in SAT)
    "5B": dict(use_rotary_positional_embeddings=True),
    # CogVideoX-5B-I2V: rotary + a learned position table, image latents concatenated (2x input channels)
    "5B-I2V": dict(use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True, in_channels=8),
    # CogVideoX1.5-5B-I2V: linear patch embedding over 2x2x2 patches, no patch bias, ofs embedding
    "1.5-5B-I2V": dict(use_rotary_positional_embeddings=True, patch_size_t=2, patch_bias=False, ofs_embed_dim=8,
                       in_channels=8, sample_frames=17),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_cogvideox_variant_converts_weight_for_weight(tmp_path, variant):
    base = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=8,
                text_embed_dim=16, num_layers=3, sample_width=12, sample_height=8, sample_frames=9,
                max_text_seq_length=16)
    torch.manual_seed(3)
    model = CogVideoXTransformer3DModel(**{**base, **VARIANTS[variant]})
    gate = torch.rand(3)
    write_sat_folder(tmp_path / "sat", sat_state_dict_by_hand(model, gate))
    result = convert_sat_checkpoint(tmp_path / "sat", tmp_path / "out", config=config_of(model))

    converted = CogVideoXTransformer3DModel.from_pretrained(tmp_path / "out" / "transformer")
    original = model.state_dict()
    converted_sd = converted.state_dict()
    assert set(converted_sd) == set(original)
    # float32 on both sides: diffusers keeps the learned position table of a fresh model in float64
    worst = max((converted_sd[k].float() - original[k].float()).abs().max().item() for k in original)
    assert worst == 0.0
    assert result.gates == pytest.approx(gate.tolist(), abs=0)


@pytest.mark.parametrize("variant", ["5B", "5B-I2V"])
def test_rotary_variants_round_trip_through_export_sat(tmp_path, variant):
    base = dict(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4, time_embed_dim=8,
                text_embed_dim=16, num_layers=2, sample_width=12, sample_height=8, sample_frames=9,
                max_text_seq_length=16)
    torch.manual_seed(4)
    model = CogVideoXTransformer3DModel(**{**base, **VARIANTS[variant]})
    export_sat(model, RepVideoGates(num_blocks=2), tmp_path / "sat")
    sat = torch.load(tmp_path / "sat" / "1" / "mp_rank_00_model_states.pt", weights_only=True)["module"]
    # SAT's rotary table: one row per latent patch (3 frames x 4 x 6), one column per head channel; the first
    # head_dim/4 columns rotate with time at frequencies 1, 1/100, ... (theta 10000), each repeated twice.
    sin, cos = sat[f"{P}mixins.pos_embed.freqs_sin"], sat[f"{P}mixins.pos_embed.freqs_cos"]
    assert sin.shape == cos.shape == (3 * 4 * 6, 16)
    assert sin[0].abs().max().item() == 0.0 and cos[0].eq(1.0).all()
    row = 4 * 6  # frame 1, height 0, width 0
    assert sin[row, :4].tolist() == pytest.approx([math.sin(1.0)] * 2 + [math.sin(0.01)] * 2, abs=1e-7)
    assert sin[row, 4:].abs().max().item() == 0.0
    convert_sat_checkpoint(tmp_path / "sat", tmp_path / "out", config=config_of(model))
    converted = CogVideoXTransformer3DModel.from_pretrained(tmp_path / "out" / "transformer").state_dict()
    assert max((converted[k].float() - v.float()).abs().max().item() for k, v in model.state_dict().items()) == 0.0


def test_exported_2b_position_table_is_the_sat_layout(tmp_path):
    transformer, gates, _ = tiny_gated()
    export_sat(transformer, gates, tmp_path / "sat")
    sat = torch.load(tmp_path / "sat" / "1" / "mp_rank_00_model_states.pt", weights_only=True)["module"]
    table = sat[f"{P}mixins.pos_embed.pos_embedding"]
    text = transformer.config.max_text_seq_length
    patches = 3 * 4 * 6  # 9 frames -> 3 latent frames, 8x12 latents in 2x2 patches
    assert table.shape == (1, text + patches, 16)
    assert table[:, :text].abs().max().item() == 0.0  # SAT leaves the text rows at zero
    assert table[0, text, 1::2].eq(1.0).any()  # cos(0) = 1 in the first patch row
    assert torch.equal(sat[f"{P}transformer.learnable_gating"], gates.gate.detach())


def test_convert_with_base_writes_a_pipeline_that_reproduces_the_gated_model(tmp_path, tiny_pipeline_dir):
    pipe = CogVideoXPipeline.from_pretrained(tiny_pipeline_dir)
    gates = RepVideoGates(num_blocks=4, window=6, model_family="CogVideoX")
    with torch.no_grad():
        gates.gate.copy_(torch.tensor([0.1, 0.9, 0.3, 0.7]))
    export_sat(pipe.transformer, gates, tmp_path / "sat")
    convert_sat_checkpoint(tmp_path / "sat", tmp_path / "out", base=str(tiny_pipeline_dir))

    call = dict(prompt="a red fox", num_inference_steps=2, guidance_scale=6.0, max_sequence_length=16,
                output_type="np")
    pipe.enable_repvideo(gates)
    expected = pipe(**call, generator=torch.Generator().manual_seed(0)).frames[0]
    converted = CogVideoXPipeline.from_pretrained(tmp_path / "out")
    loaded = converted.enable_repvideo()
    assert loaded.gate.tolist() == pytest.approx([0.1, 0.9, 0.3, 0.7], abs=1e-7)
    frames = converted(**call, generator=torch.Generator().manual_seed(0)).frames[0]
    assert abs(frames - expected).max() <= 1e-6


def test_dtype_option_writes_fp16_weights(tmp_path):
    transformer, gates, _ = tiny_gated()
    export_sat(transformer, gates, tmp_path / "sat")
    convert_sat_checkpoint(tmp_path / "sat", tmp_path / "out", dtype="fp16", config=config_of(transformer))
    converted = CogVideoXTransformer3DModel.from_pretrained(tmp_path / "out" / "transformer", torch_dtype=torch.float16)
    reference = transformer.state_dict()["transformer_blocks.0.attn1.to_q.weight"].half()
    assert converted.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float16
    assert torch.equal(converted.transformer_blocks[0].attn1.to_q.weight, reference)


def test_sharded_output_loads_like_a_single_file(tmp_path):
    transformer, gates, inputs = tiny_gated()
    export_sat(transformer, gates, tmp_path / "sat")
    convert_sat_checkpoint(tmp_path / "sat", tmp_path / "out", config=config_of(transformer), max_shard_size=4000)
    shards = sorted(p.name for p in (tmp_path / "out" / "transformer").glob("*.safetensors"))
    assert len(shards) > 3 and (tmp_path / "out" / "transformer" / "diffusion_pytorch_model.safetensors.index.json").is_file()
    diff = (converted_output(tmp_path / "out", inputs) - gated_output(transformer, gates, inputs)).abs().max().item()
    assert diff <= 1e-6


def test_cli_export_sat_and_convert(tmp_path, capsys):
    transformer, gates, inputs = tiny_gated()
    transformer.save_pretrained(tmp_path / "model" / "transformer")
    gates.save_pretrained(tmp_path / "model" / "repvideo")
    assert main(["export-sat", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "sat")]) == 0
    (tmp_path / "config.json").write_text(json.dumps(config_of(transformer)))
    assert main(["convert", "--sat", str(tmp_path / "sat"), "--out", str(tmp_path / "out"),
                 "--config", str(tmp_path / "config.json")]) == 0
    assert "wrote" in capsys.readouterr().out
    diff = (converted_output(tmp_path / "out", inputs) - gated_output(transformer, gates, inputs)).abs().max().item()
    assert diff <= 1e-6


# --- bad input: clear errors, --out not created or left untouched ---


@pytest.fixture
def sat_module():
    transformer, gates, _ = tiny_gated()
    return sat_state_dict_by_hand(transformer, gates.gate)


def _assert_refused(tmp_path, sat_path, match, **kwargs):
    with pytest.raises(ValueError, match=match):
        convert_sat_checkpoint(sat_path, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging folder left behind


def test_corrupt_file_is_refused(tmp_path, sat_module):
    folder = write_sat_folder(tmp_path / "sat", sat_module)
    file = folder / "1000" / "mp_rank_00_model_states.pt"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])  # truncated download
    _assert_refused(tmp_path, folder, "corrupt, truncated or not a torch checkpoint")
    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint" * 100)
    _assert_refused(tmp_path, tmp_path / "garbage.pt", "corrupt, truncated or not a torch checkpoint")


def test_missing_keys_are_listed(tmp_path, sat_module):
    del sat_module[f"{P}transformer.layers.2.attention.dense.weight"]
    del sat_module[f"{P}mixins.adaln_layer.adaLN_modulations.1.1.bias"]
    folder = write_sat_folder(tmp_path / "sat", sat_module)
    _assert_refused(tmp_path, folder, r"missing keys \(3\).*adaLN_modulations\.1\.1\.bias.*layers\.2\.attention\.dense\.weight")


def test_extra_keys_are_listed(tmp_path, sat_module):
    sat_module[f"{P}transformer.layers.0.attention.extra_proj.weight"] = torch.zeros(2)
    sat_module[f"{P}mixins.something_new.weight"] = torch.zeros(2)
    folder = write_sat_folder(tmp_path / "sat", sat_module)
    _assert_refused(tmp_path, folder, r"unexpected keys \(2\).*something_new\.weight.*extra_proj\.weight")


def test_wrong_gate_length_is_refused(tmp_path, sat_module):
    sat_module[f"{P}transformer.learnable_gating"] = torch.full((30,), 0.5)
    folder = write_sat_folder(tmp_path / "sat", sat_module)
    _assert_refused(tmp_path, folder, r"has shape \(30,\).*4 transformer layers.*expected shape \(4,\)")


def test_checkpoint_without_gates_is_refused(tmp_path, sat_module):
    del sat_module[f"{P}transformer.learnable_gating"]
    folder = write_sat_folder(tmp_path / "sat", sat_module)
    _assert_refused(tmp_path, folder, "learnable_gating.*plain CogVideoX checkpoint")


@pytest.mark.parametrize("extra, match", [
    ("mixins.lora.layers.0.weight_a", "Unsupported CogVideoX variant.*LoRA"),
    ("mixins.swiglu.w3.0.weight", "Unsupported CogVideoX variant.*SwiGLU"),
])
def test_unsupported_variants_are_refused(tmp_path, sat_module, extra, match):
    sat_module[P + extra] = torch.zeros(2)
    _assert_refused(tmp_path, write_sat_folder(tmp_path / "sat", sat_module), match)


def test_non_transformer_checkpoint_is_refused(tmp_path):
    vae_like = {"encoder.conv_in.weight": torch.zeros(2), "decoder.conv_out.weight": torch.zeros(2)}
    torch.save({"state_dict": vae_like}, tmp_path / "vae.pt")
    _assert_refused(tmp_path, tmp_path / "vae.pt", "no CogVideoX transformer found")


def test_pickled_python_objects_need_explicit_trust(tmp_path, sat_module):
    folder = write_sat_folder(tmp_path / "sat", sat_module, saved_at=datetime.date(2025, 1, 14))
    _assert_refused(tmp_path, folder, "allow-unsafe-pickle")
    result = convert_sat_checkpoint(folder, tmp_path / "out", allow_unsafe_pickle=True)
    assert result.num_layers == 4


def test_non_empty_out_is_left_untouched(tmp_path, sat_module):
    folder = write_sat_folder(tmp_path / "sat", sat_module)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="already exists and is not empty.*--overwrite"):
        convert_sat_checkpoint(folder, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
    convert_sat_checkpoint(folder, tmp_path / "out", overwrite=True)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["repvideo", "transformer"]


def test_failure_while_writing_leaves_no_partial_output(tmp_path, sat_module, monkeypatch):
    import safetensors.torch

    folder = write_sat_folder(tmp_path / "sat", sat_module)
    calls = []

    def failing_save_file(*args, **kwargs):
        calls.append(1)
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", failing_save_file)
    with pytest.raises(OSError, match="No space left"):
        convert_sat_checkpoint(folder, tmp_path / "out")
    assert calls and not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sat"]


def test_missing_sat_folder_gives_a_clear_error_on_the_command_line(tmp_path, capsys):
    code = main(["convert", "--sat", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_export_refuses_gates_of_another_window_or_length(tmp_path):
    transformer, _, _ = tiny_gated()
    with pytest.raises(ValueError, match="window 2.*hard-codes window 6"):
        export_sat(transformer, RepVideoGates(num_blocks=4, window=2), tmp_path / "sat")
    with pytest.raises(ValueError, match="gates have 5 entries but the transformer has 4 blocks"):
        export_sat(transformer, RepVideoGates(num_blocks=5), tmp_path / "sat")
    assert not (tmp_path / "sat").exists()


def test_docstring_examples_run():
    import doctest
    import importlib

    # The examples live beside their functions in the package's modules (testmod skips re-exported names).
    failed = attempted = 0
    for name in ("repvideo_diffusers.convert.to_diffusers", "repvideo_diffusers.convert.to_sat"):
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
        failed, attempted = failed + result.failed, attempted + result.attempted
    assert failed == 0
    assert attempted >= 2


def test_unreachable_base_and_bad_config_are_refused(tmp_path, sat_module):
    folder = write_sat_folder(tmp_path / "sat", sat_module)
    _assert_refused(tmp_path, folder, "--base 'nobody/no-such-pipeline'.*could not be downloaded",
                    base="nobody/no-such-pipeline")
    (tmp_path / "bad.json").write_text(json.dumps({"num_layers": 4, "num_lauers": 4}))
    _assert_refused(tmp_path, folder, r"does not take: \['num_lauers'\]", config=tmp_path / "bad.json")

"""Export/reload: atomic writes, clear errors, nothing left behind."""
import pytest
import torch
from tiny import tiny_model

from nas_llm import ExportError, Ranking, SubnetSpace, export, load_model, load_subnet, slice_model


@pytest.fixture()
def sliced():
    m = tiny_model("llama-gqa")
    sp = SubnetSpace.from_model(m, granularity=16)
    s = sp.uniform(kv_groups=2, neurons=48, drop=[3])
    return slice_model(m, Ranking.identity(4, 3, 96).resolve(s), subnet=s)


def test_roundtrip_writes_subnet_json(sliced, tmp_path):
    import json

    out = export(sliced, tmp_path / "m", metadata={"note": "x"})
    info = json.loads((out / "subnet.json").read_text())
    assert info["subnet"]["neurons"] == [48, 48, 48, 48] and info["subnet"]["keep"] == [True, True, True, False]
    assert info["note"] == "x" and info["params"] == sum(p.numel() for p in sliced.parameters())
    model, _ = (load_subnet(out), None)
    assert sum(p.numel() for p in model.parameters()) == info["params"]


def test_refuses_nonempty_folder_without_overwrite(sliced, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export(sliced, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp folder left
    export(sliced, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_failure_leaves_nothing(sliced, tmp_path):
    class BrokenTokenizer:
        def save_pretrained(self, d):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        export(sliced, tmp_path / "m", tokenizer=BrokenTokenizer())
    assert list(tmp_path.iterdir()) == []


def test_missing_and_corrupt_weights(sliced, tmp_path):
    out = export(sliced, tmp_path / "m")
    w = out / "model.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="corrupt weight file .*model.safetensors"):
        load_subnet(out)
    w.unlink()
    with pytest.raises(FileNotFoundError, match="weight file missing: .*model.safetensors"):
        load_subnet(out)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_subnet(tmp_path / "nowhere")


def test_load_model_routes_export_folders(sliced, tmp_path):
    out = export(sliced, tmp_path / "m")
    with pytest.raises(Exception):
        load_model(str(out))  # no tokenizer saved: a clear transformers error, not a silent wrong model
    with pytest.raises(FileNotFoundError, match="neither a model folder nor a .gguf"):
        load_model(str(tmp_path / "missing.bin"))


def test_extra_bias_from_compensation_roundtrips(sliced, tmp_path):
    from nas_llm.model.slicing import mark_nonstock

    down = sliced.model.layers[0].mlp.down_proj
    down.bias = torch.nn.Parameter(torch.randn(down.out_features))
    mark_nonstock(sliced.config)
    out = export(sliced, tmp_path / "b")
    rl = load_subnet(out)
    ids = torch.randint(0, 128, (1, 5))
    with torch.no_grad():
        assert (rl(ids).logits - sliced(ids).logits).abs().max() <= 1e-4

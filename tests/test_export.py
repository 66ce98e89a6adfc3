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
    with pytest.raises(FileExistsError, match="replaces only a previous nas-llm export"):
        export(sliced, out, overwrite=True)  # a user's folder is never replaced (issue 21)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    exp = export(sliced, tmp_path / "e")
    (exp / "stale.txt").write_text("from an older export")
    export(sliced, exp, overwrite=True)  # a previous export is
    assert not (exp / "stale.txt").exists() and (exp / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e", "m"]


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


# -- issue 21: export never replaces what is not an export; shapes come from the modules ------------------
def _sliced(name: str = "llama-gqa"):
    model = tiny_model(name)
    space = SubnetSpace.from_model(model, granularity=32)
    sub = space.uniform(kv_groups=1, neurons=64)
    return model, slice_model(model, Ranking.identity(space.num_layers, space.dims.num_kv_heads,
                                                       space.dims.intermediate).resolve(sub), subnet=sub)


def test_overwrite_replaces_only_a_previous_export(tmp_path, monkeypatch):
    from nas_llm.model.export import ExportTargetError

    _, small = _sliced()
    out = export(small, tmp_path / "exp")
    export(small, out, overwrite=True)  # a previous export: replaced
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text("{}")
    (run / "evaluations.csv").write_text("id\n0\n")
    other = tmp_path / "photos"
    other.mkdir()
    (other / "cat.jpg").write_text("meow")
    for target in (run, other, tmp_path):
        with pytest.raises(ExportTargetError):
            export(small, target, overwrite=True)
    monkeypatch.chdir(out)
    with pytest.raises(ExportTargetError, match="current directory"):
        export(small, ".", overwrite=True)
    assert (run / "run.json").is_file() and (other / "cat.jpg").read_text() == "meow" and (out / "subnet.json").is_file()


def test_a_model_sliced_by_hand_exports_a_folder_that_reloads(tmp_path):
    import torch.nn as nn

    model = tiny_model("llama-gqa")
    mlp = model.model.layers[1].mlp
    keep = list(range(40))
    mlp.gate_proj = nn.Linear(48, 40, bias=False)
    mlp.up_proj = nn.Linear(48, 40, bias=False)
    down = nn.Linear(40, 48, bias=False)
    with torch.no_grad():
        down.weight.copy_(model.model.layers[1].mlp.down_proj.weight[:, keep])
    mlp.down_proj = down
    ids = torch.randint(0, 128, (1, 12))
    with torch.no_grad():
        ref = model(ids).logits
    out = export(model, tmp_path / "hand")
    back = load_subnet(out)
    with torch.no_grad():
        assert torch.allclose(back(ids).logits, ref, atol=1e-5)
    assert [r["intermediate_size"] for r in back.config.nas_llm["layers"]] == [96, 40, 96, 96]


def test_inconsistent_hand_slicing_is_refused_naming_the_layer(tmp_path):
    import torch.nn as nn

    from nas_llm.model.export import ExportError

    model = tiny_model("llama-gqa")
    model.model.layers[2].mlp.gate_proj = nn.Linear(48, 40, bias=False)  # up/down left at 96
    with pytest.raises(ExportError, match="layer 2: inconsistent shapes"):
        export(model, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()

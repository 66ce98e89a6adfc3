"""`nas-llm export`: run row -> sliced (or reformed) model folder -> load_subnet -> evaluate, end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nas_llm import load_subnet, masked
from nas_llm.deploy import export_pick
from nas_llm.run import Run
from nas_llm.select import pick
from test_evaluate import NetworkGuard
from test_select import ROWS, make_run


def _dense_masked_logits(run: Run, row_id: int, ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Reference: the dense model computing as the subnet (input-channel masks), no slicing involved."""
    from search_spaces import Subnet

    from nas_llm import load_model

    model, _ = load_model(run.settings()["model"])
    model = model.to(dtype)
    subnet = Subnet.from_json(run.table().set_index("id").loc[row_id, "subnet"])
    with torch.no_grad(), masked(model, run.ranking().resolve(subnet)):
        return model(ids).logits


def test_export_knee_loads_and_matches_masked_dense(tmp_path, capsys):
    from nas_llm.cli import main

    run = make_run(tmp_path)
    out = tmp_path / "exports" / "knee"
    assert main(["export", str(run.path), "--pick", "knee", "--out", str(out)]) == 0
    assert f"exported to {out}" in capsys.readouterr().out
    knee = pick(run, "knee").id
    model = load_subnet(out)
    ids = torch.randint(0, 98, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model(ids).logits
    torch.testing.assert_close(got, _dense_masked_logits(run, knee, ids), rtol=1e-4, atol=1e-4)
    meta = json.loads((out / "subnet.json").read_text())
    assert meta["id"] == knee and meta["reformed"] is False and meta["objectives"] == {"perplexity": 12.0, "latency": 40.0}
    assert meta["command"].startswith("nas-llm export") and "--pick knee" in meta["command"]
    card = (out / "README.md").read_text()
    assert f"row id {knee}" in card and "| latency (ms) | 40 |" in card and "| perplexity | 12 |" in card and "nas-llm export" in card
    assert (out / "tokenizer.json").is_file() and list(out.glob("*.safetensors"))
    assert json.loads((run.path / "exports.json").read_text())[0]["id"] == knee
    # a second export into the same folder needs --overwrite, and fails before any work
    assert main(["export", str(run.path), "--pick", "1", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(run.path), "--pick", "1", "--out", str(out), "--overwrite"]) == 0
    assert json.loads((out / "subnet.json").read_text())["id"] == 1
    assert len(json.loads((run.path / "exports.json").read_text())) == 1  # same folder: one entry, updated


def test_export_then_evaluate_end_to_end(tmp_path, monkeypatch):
    """export -> load_subnet -> `nas-llm evaluate --limit 20` on all 7 tasks; eval.json shows up in the report."""
    from nas_llm.cli import main
    from nas_llm.report import write_report

    run = make_run(tmp_path)
    out = export_pick(run, 2, tmp_path / "exp2")
    guard = NetworkGuard(monkeypatch)
    assert main(["evaluate", str(out), "--seq-len", "64", "--max-windows", "2", "--limit", "20", "--batch-size", "16"]) == 0
    assert guard.attempts == []
    ev = json.loads((out / "eval.json").read_text())
    assert set(ev["perplexity"]) == {"wikitext2-test", "ptb-test"} and ev["perplexity"]["ptb-test"]["windows"] == 2
    assert len(ev["zeroshot"]) == 7 and all(r["n"] == 20 for r in ev["zeroshot"].values())
    assert ev["params"] == sum(p.numel() for p in load_subnet(out).parameters())
    html = write_report(run).read_text()
    assert f"{ev['perplexity']['wikitext2-test']['ppl']:.3f}" in html


def test_export_uses_reformation_when_the_run_has_it(tmp_path, monkeypatch):
    import nas_llm.reform as reform

    run = make_run(tmp_path, reform={"method": "admm", "rho": 1.0})
    calls = []

    def fake_reform_for_run(run_dir, subnet, model, tokenizer, progress=True):
        from nas_llm import slice_model

        calls.append((Path(run_dir), subnet.key()))
        sliced = slice_model(model, Run(run_dir).ranking().resolve(subnet), subnet=subnet)
        with torch.no_grad():
            sliced.lm_head.weight.mul_(2.0)  # a visible "reformation"
        return sliced

    monkeypatch.setattr(reform, "reform_for_run", fake_reform_for_run)
    out = export_pick(run, 3, tmp_path / "exp3")
    key3 = run.table().set_index("id").loc[3, "key"]
    assert calls == [(run.path, key3)]
    meta = json.loads((out / "subnet.json").read_text())
    assert meta["reformed"] is True
    ids = torch.randint(0, 98, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = load_subnet(out)(ids).logits
    torch.testing.assert_close(got, 2.0 * _dense_masked_logits(run, 3, ids), rtol=1e-4, atol=1e-4)
    assert "reformed (admm)" in (out / "README.md").read_text()


def test_bad_pick_is_clear(tmp_path, capsys):
    from nas_llm.cli import main

    run = make_run(tmp_path)
    assert main(["export", str(run.path), "--pick", "77", "--out", str(tmp_path / "x")]) == 2
    assert "no evaluation with id 77" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.smollm2
def test_smollm2_export_and_evaluate_all_tasks(tmp_path, monkeypatch, smollm2):
    """A hand-made SmolLM2 run: export its knee, reload with stock classes, evaluate 7 tasks (small limit)."""
    from nas_llm.cli import main

    rows = [(0, "dense", 20.0, 50.0, True), (1, "nsga2", 22.0, 30.0, True), (2, "nsga2", 40.0, 25.0, True), (3, "nsga2", 60.0, 24.0, True)]
    run = make_run(tmp_path, rows=rows, model_name="smollm2-135m", granularity=64)
    out = tmp_path / "knee"
    assert main(["export", str(run.path), "--pick", "knee", "--out", str(out)]) == 0
    knee = pick(run, "knee").id
    assert knee == 1
    model = load_subnet(out).double()  # float64 on both sides: 30 cut layers in fp32 differ by ~1e-4 relative
    ids = torch.randint(0, 49152, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model(ids).logits
    torch.testing.assert_close(got, _dense_masked_logits(run, knee, ids, torch.float64), rtol=1e-6, atol=1e-6)
    guard = NetworkGuard(monkeypatch)
    assert main(["evaluate", str(out), "--seq-len", "256", "--max-windows", "2", "--limit", "4", "--batch-size", "8"]) == 0
    assert guard.attempts == []
    ev = json.loads((out / "eval.json").read_text())
    assert len(ev["zeroshot"]) == 7 and all(r["n"] == 4 for r in ev["zeroshot"].values())
    # a random subnet of a random ranking: the perplexity is huge but must be a real number
    assert 1.0 < ev["perplexity"]["wikitext2-test"]["ppl"] < float("inf")

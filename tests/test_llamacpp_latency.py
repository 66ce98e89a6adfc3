"""llama.cpp latency: interleaved GGUF timing, the objective, the lookup table and its use in search/select/report.

No timing is asserted (a shared CPU makes any threshold flaky); the tests check the bookkeeping, the
table's closed form, the cache, and that the runtime, type and threads reach run.json and the axis.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from nas_llm.model.gguf import export_gguf
from objectives import Context
from objectives.llamacpp import LatencyLlamaCpp, measure_ggufs
from objectives.llamacpp_lut import LatencyLlamaCppLUT, LlamaCppLUT, validate_llamacpp
from search_spaces import Ranking, SubnetSpace
from tiny import tiny_model
from tiny_bpe import bpe_tokenizer

FAST = dict(n_tokens=16, n_context=16, n_decode=4, rounds=2, reps=2, threads=1)


def _ctx(model):
    space = SubnetSpace.from_model(model, granularity=16)
    d = space.dims
    return Context(model, bpe_tokenizer(), space, Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate), progress=False)


@pytest.mark.parametrize("mode", ["prefill", "decode"])
def test_measure_ggufs_interleaves_rounds(mode, tmp_path):
    model = tiny_model("llama-gqa")
    a = export_gguf(model, tmp_path / "a.gguf", bpe_tokenizer(), outtype="f16", check=False)
    res = measure_ggufs({"a": a, "b": a}, mode, outtype="f16", **{k: v for k, v in FAST.items()})
    for r in res.values():
        assert r.median_s > 0 and r.n_runs == 4 and len(r.round_medians_s) == 2 and r.spread >= 0
        assert r.mode == mode and r.device.startswith("llama.cpp f16 1 threads")
    with pytest.raises(ValueError, match="mode 'both'"):
        measure_ggufs({"a": a}, "both")


def test_objective_scores_a_subnet_against_the_dense_gguf():
    model = tiny_model("llama-gqa")
    ctx = _ctx(model)
    obj = LatencyLlamaCpp(type="q8_0", mode="decode", **FAST)
    sub = ctx.space.uniform(1, 48, drop=[1])
    ms = obj.score(sub, ctx)
    assert ms == pytest.approx(obj.last["subnet"].median_s * 1e3) and ms > 0 and set(obj.last) == {"dense", "subnet"}
    assert obj.settings() | {"llama_cpp": "x"} == {"runtime": "llama.cpp", "llama_cpp": "x", "type": "q8_0", "threads": 1,
                                                    "mode": "decode", "n_tokens": 16, "n_context": 16, "n_decode": 4,
                                                    "flash_attn": True}
    assert obj.score(ctx.space.dense(), ctx) == pytest.approx(obj.last["dense"].median_s * 1e3)
    assert obj.kind == "latency" and obj.measured is True and obj.unit == "ms"
    with pytest.raises(ValueError, match="valid types: f32, f16, q8_0, q4_k_m"):
        LatencyLlamaCpp(type="q3")


@pytest.mark.timing_checks
def test_table_is_the_closed_form_of_its_timings():
    """Times generated from known per-layer costs give those costs back (probe of k=4 layers, model of L=6)."""
    k, L, G, I, points = 4, 6, 3, 96, [32, 64]
    C0, d, a, m = 2.0, 0.5, {1: -0.2, 2: -0.1}, {32: -0.3, 64: -0.15}
    t = {"dense": 1.0 + k * d, "one": 1.0 + d, "full": C0 + L * d, "full_half": C0 + (L - 3) * d}
    t |= {f"a{g}": t["dense"] + k * a[g] for g in a} | {f"m{n}": t["dense"] + k * m[n] for n in points}
    tab = LlamaCppLUT._table(t, k, L, G, I, points, [1, 3, 5])
    assert tab["layer_dense_s"] == pytest.approx(d) and tab["const_s"] == pytest.approx(C0) and tab["probe_scale"] == pytest.approx(1)
    assert tab["attn_delta_s"] == pytest.approx({"3": 0.0, "1": -0.2, "2": -0.1})
    assert tab["mlp_delta_s"] == pytest.approx({"96": 0.0, "32": -0.3, "64": -0.15})


@pytest.mark.timing_checks
def test_contradictory_timings_are_refused():
    """The decode table a busy machine produced once: the model measured faster than its half (a negative layer
    time) and cut probes 4x slower than dense. It steered a search before this check; now it is refused."""
    t = {"full": 0.0531, "full_half": 0.1916, "dense": 0.0366, "one": 0.0164, "a1": 0.0207, "a2": 0.0291,
         "m64": 0.1628, "m128": 0.0166}
    with pytest.warns(RuntimeWarning, match="1 cut probes took more than 1.5x the dense probe \(worst: m64, 4.4x\)"):
        with pytest.raises(RuntimeError, match=r"the model \(53.1 ms\) is not slower than its half \(192 ms\).*nothing was cached"):
            LlamaCppLUT._table(t, 8, 30, 3, 1536, [64, 128], list(range(1, 30, 2)))


def test_lookup_table_builds_caches_and_predicts(tmp_path):
    # plumbing, not timing: conftest turns check_times off (tiny probes under a loaded CI machine can contradict each
    # other), test_contradictory_timings_are_refused covers it
    model = tiny_model("llama-gqa")
    kw = dict(type="f16", mode="prefill", granularity=16, probe_layers=2, tokenizer=bpe_tokenizer(), cache_dir=tmp_path,
              progress=False, **FAST)
    lut = LlamaCppLUT(**kw)
    lut.setup(model)
    assert lut.measured and lut.path.is_file() and lut.path.parent == tmp_path
    space = SubnetSpace.from_model(model, granularity=16)
    assert lut.predict(space.dense()) == pytest.approx(lut.table["full_dense_s"])  # C0 + L d, no deltas
    assert set(lut.table["mlp_delta_s"]) == {str(n) for n in space.neuron_choices}
    again = LlamaCppLUT(**kw)
    again.setup(model)
    assert not again.measured and again.table == lut.table
    other = LlamaCppLUT(**{**kw, "type": "q8_0"})
    assert other.cache_key(model) != lut.cache_key(model)
    r = validate_llamacpp(model, bpe_tokenizer(), lut, [space.uniform(1, 32), space.uniform(2, 64, drop=[0])], progress=False)
    assert len(r["measured_s"]) == 2 and np.isfinite(r["mape"]) and r["settings"]["type"] == "f16"
    # the anchored MAPE: predictions scaled by (dense measured now / dense predicted), by hand
    k = r["dense_s"] / lut.table["full_dense_s"]
    want = 100 * np.mean([abs(k * p / m - 1) for p, m in zip(r["pred_s"], r["measured_s"])])
    assert r["drift"] == pytest.approx(k) and r["mape_anchored"] == pytest.approx(want)


def test_lookup_table_probes_every_layer_by_default(tmp_path, monkeypatch):
    """Default ``probe_layers=None``: the probe GGUFs have all the model's layers (8-layer probes ranked and
    anchored worse on SmolLM2); a number still caps them; below 2 is refused."""
    from gguf import GGUFReader

    from objectives.latency import LatencyResult

    seen = {}

    def blocks(path):
        return len({t.name.split(".")[1] for t in GGUFReader(path).tensors if t.name.startswith("blk.")})

    def fake_measure(paths, mode, **kw):
        seen.update({k: blocks(p) for k, p in paths.items() if k in ("dense", "one")})
        return {k: LatencyResult(1e-3 * (1 + i), 0.0, 1, mode, 1, 1, "x") for i, k in enumerate(paths)}

    monkeypatch.setattr("objectives.llamacpp_lut.measure_ggufs", fake_measure)
    model = tiny_model("llama-gqa")
    L = model.config.num_hidden_layers
    lut = LlamaCppLUT(type="f16", mode="decode", granularity=16, tokenizer=bpe_tokenizer(), cache_dir=tmp_path,
                      progress=False, **FAST)
    assert lut.probe_layers is None
    lut.build(model)
    assert seen == {"dense": L, "one": 1}
    with pytest.raises(ValueError, match="probe_layers"):
        LlamaCppLUT(probe_layers=1)


def test_search_records_the_runtime_and_select_and_report_use_it(tmp_path, monkeypatch):
    """A search on the LUT objective: run.json keeps runtime/type/threads; --max-latency-ms and the axis use them."""
    from nas_llm.report import build_html
    from nas_llm.run import Run
    from nas_llm.search import SearchProblem, run_random
    from nas_llm.select import Objectives, label, select

    monkeypatch.setenv("NAS_LLM_CACHE", str(tmp_path / "cache"))
    model = tiny_model("llama-gqa")
    ctx = _ctx(model)
    obj = LatencyLlamaCppLUT(type="q8_0", mode="decode", granularity=16, probe_layers=2, **FAST)
    sp = SearchProblem(ctx, [obj, "params_ratio"], [])
    desc = sp.describe()
    entry = desc["objectives"][0]
    assert entry["name"] == "latency_llamacpp_lut" and entry["settings"]["type"] == "q8_0" and entry["settings"]["threads"] == 1
    df = run_random(sp, 6, batch=6, progress=False).table
    assert np.isfinite(df["latency_llamacpp_lut"]).all() and (df["latency_llamacpp_lut"] >= 0).all()
    # tiny models time at the noise floor: distinct stand-in values keep the budget check below meaningful
    df["latency_llamacpp_lut"] = np.linspace(1.0, 2.0, len(df))
    objs = Objectives.of(desc)
    assert label("latency_llamacpp_lut", objs) == "latency_llamacpp_lut (ms, predicted, llama.cpp q8_0, 1 threads, decode after 16 tokens)"
    # a run folder by hand from that table: select by latency budget, the report's axis says the runtime
    run = Run(tmp_path / "run")
    run.path.mkdir()
    run.write_settings({"model": "tiny", "granularity": 16, **desc, "command": "test"})
    run.write_table(df)
    Ranking.identity(4, 3, 96).save(run.ranking_file)
    budget = float(np.median(df["latency_llamacpp_lut"]))
    sel = select(run, "budget", max_latency_ms=budget)
    assert float(sel.row["latency_llamacpp_lut"]) <= budget
    html = build_html(run)
    assert "llama.cpp q8_0, 1 threads, decode after 16 tokens" in html
    assert json.loads(run.settings_file.read_text())["objectives"][0]["settings"]["runtime"] == "llama.cpp"


def test_latency_cli_with_the_llamacpp_runtime(tmp_path, monkeypatch, capsys):
    from nas_llm.cli import main

    monkeypatch.setenv("NAS_LLM_CACHE", str(tmp_path / "cache"))
    tiny_model("llama-gqa").save_pretrained(tmp_path / "m")
    bpe_tokenizer().save_pretrained(tmp_path / "m")
    common = ["--model", str(tmp_path / "m"), "--runtime", "llamacpp", "--type", "f16", "--threads", "1", "--seq-len", "16",
              "--rounds", "1", "--granularity", "16", "--mode", "both"]
    assert main(["latency", "measure", *common, "--ratio", "0.6", "--json", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "prefill  subnet" in out and "decode   subnet" in out and "[llama.cpp f16 1 threads" in out
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["results"]["decode"]["settings"]["type"] == "f16" and set(m["results"]["prefill"]) == {"settings", "dense", "subnet"}
    assert main(["latency", "validate", *common, "--n", "3", "--json", str(tmp_path / "v.json")]) == 0
    out = capsys.readouterr().out
    assert out.count("lookup table vs measured: Spearman") == 2
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["runtime"] == "llamacpp" and len(v["modes"]["prefill"]["measured_s"]) == 3
    assert list((tmp_path / "cache" / "latency").glob("lut-llamacpp-*.json"))

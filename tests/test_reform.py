"""Reformation: solvers against independent references, sequential collection against a brute-force loop."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nas_llm import export, load_subnet, masked, slice_model
from nas_llm.model.importance import collect_stats
from search_spaces.plan import head_channels
from nas_llm.reform import admm, bias_shift, closed_form, reconstruction_error, reform, reform_for_run
from nas_llm.run import Run
from search_spaces import LayerPlan, Plan, Ranking, SubnetSpace, get_family
from tiny import tiny_model


def _problem(n=48, out=20, N=400, seed=0, spread=True):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, N, generator=g, dtype=torch.float64)
    if spread:  # channels of very different scale, as in LLM activations
        X = X * (torch.rand(n, 1, generator=g, dtype=torch.float64) * 20 + 0.1)
    W = torch.randn(out, n, generator=g, dtype=torch.float64)
    kept = sorted(torch.randperm(n, generator=g)[: n * 2 // 3].tolist())
    return W, X, kept


def _masked_w(W, kept):
    m = torch.zeros(W.shape[1], dtype=W.dtype)
    m[kept] = 1
    return W * m


# -- solvers --------------------------------------------------------------------------------


def test_closed_form_matches_lstsq():
    W, X, kept = _problem(spread=False)
    ref = torch.zeros_like(W)  # independent: least squares on X itself, no Gram matrix
    ref[:, kept] = torch.linalg.lstsq(X[kept].T, (W @ X).T).solution.T
    got = closed_form(W, X @ X.T, kept, damp=1e-12)
    assert torch.allclose(got, ref, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("precondition", [True, False])
def test_admm_converges_to_closed_form(precondition):
    W, X, kept = _problem()
    H = X @ X.T
    ref = closed_form(W, H, kept)
    hist: list[float] = []
    got = admm(W, H, kept, iters=200, precondition=precondition, history=hist)
    rel = float((got - ref).norm() / ref.norm())
    assert rel <= 1e-3, rel
    assert len(hist) == 200 and hist[-1] < hist[1]


def test_admm_default_30_iterations_close():
    W, X, kept = _problem(seed=3)
    H = X @ X.T
    ref = closed_form(W, H, kept)
    got = admm(W, H, kept)
    e0, e_ref, e = (reconstruction_error(w, W, H) for w in (_masked_w(W, kept), ref, got))
    assert e_ref <= e <= e_ref + 0.01 * (e0 - e_ref)


@pytest.mark.parametrize("seed", range(4))
def test_error_never_above_unreformed_and_cut_is_zero(seed):
    W, X, kept = _problem(seed=seed, N=30 if seed % 2 else 400)  # odd seeds: fewer samples than channels
    H = X @ X.T
    cut = sorted(set(range(W.shape[1])) - set(kept))
    e0 = reconstruction_error(_masked_w(W, kept), W, H)
    for w in (admm(W, H, kept), admm(W, H, kept, iters=1), closed_form(W, H, kept)):
        assert reconstruction_error(w, W, H) <= e0 * (1 + 1e-9)
        assert torch.count_nonzero(w[:, cut]) == 0
        assert w.dtype == W.dtype


def test_float32_in_float32_out():
    W, X, kept = _problem()
    out = admm(W.float(), (X @ X.T).float(), kept)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_rank_deficient_inputs_give_finite_weights():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(10, 16, generator=g, dtype=torch.float64)
    kept = list(range(0, 16, 2))
    X = torch.randn(16, 5, generator=g, dtype=torch.float64)  # 5 samples, 16 channels
    X[3] = X[2]  # duplicated channels
    X[7] = 0  # a dead channel
    for H in (X @ X.T, torch.zeros(16, 16, dtype=torch.float64), (X @ X.T).float()):
        for w in (admm(W, H, kept), closed_form(W, H, kept), closed_form(W, H, kept, damp=0.0)):
            assert torch.isfinite(w).all()
            assert reconstruction_error(w, W, H) <= reconstruction_error(_masked_w(W, kept), W, H) * (1 + 1e-6) + 1e-9


def test_bad_inputs_raise():
    W, X, kept = _problem()
    with pytest.raises(ValueError, match="kept column"):
        closed_form(W, X @ X.T, [0, W.shape[1]])
    with pytest.raises(ValueError, match="need W"):
        admm(W, X[:5] @ X[:5].T, kept)
    H = X @ X.T
    H[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        admm(W, H, kept)


def test_bias_shift_is_mean_of_cut_contribution():
    W, X, kept = _problem()
    cut = sorted(set(range(W.shape[1])) - set(kept))
    b = bias_shift(W, X.mean(1), kept)
    # the compensated output has the dense output's mean
    assert torch.allclose((_masked_w(W, kept) @ X).mean(1) + b, (W @ X).mean(1))
    assert torch.allclose(b, W[:, cut] @ X[cut].mean(1))


# -- sequential reformation on tiny models -------------------------------------------------------


def _plan(model, drop=(2,), seed=0):
    fam = get_family(model)
    d = fam.dims(model.config)
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(d.num_layers):
        kv = tuple(sorted(rng.choice(d.num_kv_heads, max(1, d.num_kv_heads - 1), replace=False).tolist()))
        nr = tuple(sorted(rng.choice(d.intermediate, d.intermediate // 2, replace=False).tolist()))
        layers.append(LayerPlan(i not in drop, kv, nr))
    return Plan(tuple(layers))


def _ids(n=6, L=24, seed=0):
    return torch.randint(0, 128, (n, L), generator=torch.Generator().manual_seed(seed))


def _brute_force_sequential(model, plan, ids, damp=0.01):
    """Independent reference: after each map is reformed, recollect statistics with nas_llm.model.importance."""
    fam = get_family(model)
    d = fam.dims(model.config)
    ref = copy.deepcopy(model)
    keep_only = Plan(tuple(LayerPlan(lp.keep, tuple(range(d.num_kv_heads)), tuple(range(d.intermediate))) for lp in plan.layers))
    for i, lp in enumerate(plan.layers):
        if not lp.keep:
            continue
        layer = fam.decoder_layers(ref)[i]
        for key, lin, kept in (("o", fam.attn_linears(layer)["o"], head_channels(lp.kv_groups, d)),
                               ("down", fam.mlp_linears(layer)["down"], list(lp.neurons))):
            with masked(ref, keep_only):  # earlier maps are already zero on their cut columns
                st = collect_stats(ref, ids, hessian=False, progress=False)
            with torch.no_grad():
                lin.weight.copy_(closed_form(lin.weight, st[i].H[key], kept, damp=damp))
    return slice_model(ref, plan)


def test_sequential_matches_brute_force_reference():
    model = tiny_model("llama-gqa")
    plan, ids = _plan(model), _ids()
    got = reform(model, plan, ids, "exact", batch_size=4, progress=False)
    ref = _brute_force_sequential(model, plan, ids)
    sd_got, sd_ref = got.state_dict(), ref.state_dict()
    assert sd_got.keys() == sd_ref.keys()
    for k in sd_ref:
        assert torch.allclose(sd_got[k], sd_ref[k], rtol=1e-4, atol=1e-5), k


def _layer_outputs(model, ids, layer_idx):
    fam = get_family(model)
    out = {}
    h = fam.decoder_layers(model)[layer_idx].register_forward_hook(lambda m, a, o: out.setdefault("y", o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits
    h.remove()
    return out["y"], logits


@pytest.mark.parametrize("family", ["llama-gqa", "mistral", "qwen2", "qwen3"])
def test_reformed_model_closer_to_dense(family):
    model = tiny_model(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan, ids = _plan(model, drop=()), _ids()
    dense_y, dense_logits = _layer_outputs(model, ids, 0)
    plain = reform(model, plan, ids, "none")
    plain_y, plain_logits = _layer_outputs(plain, ids, 0)
    for method in ("admm", "exact"):
        ref = reform(model, plan, ids, method, progress=False)
        y, logits = _layer_outputs(ref, ids, 0)
        # layer 0 sees the same inputs in every model: its output on the calibration data is closer to the dense one
        assert (y - dense_y).pow(2).sum() < (plain_y - dense_y).pow(2).sum()
        assert (logits - dense_logits).pow(2).sum() < (plain_logits - dense_logits).pow(2).sum()
        assert torch.isfinite(logits).all()
    for k, v in model.state_dict().items():  # the dense model is untouched
        assert torch.equal(v, before[k]), k


def test_admm_model_close_to_exact_model():
    model = tiny_model("llama-gqa")
    plan, ids = _plan(model), _ids()
    a = reform(model, plan, ids, "admm", iters=300, progress=False)
    e = reform(model, plan, ids, "exact", progress=False)
    for (k, va), vb in zip(a.state_dict().items(), e.state_dict().values()):
        assert torch.allclose(va, vb, rtol=1e-3, atol=1e-4), k


def test_bias_compensation_matches_mean_and_exports(tmp_path):
    model = tiny_model("llama-gqa")  # LLaMA o_proj/down_proj have no bias
    plan, ids = _plan(model), _ids()
    out = reform(model, plan, ids, "bias", progress=False)
    fam = get_family(out)
    o_new = fam.attn_linears(fam.decoder_layers(out)[0])["o"]
    assert o_new.bias is not None and out.config.nas_llm.get("nonstock")
    # layer 0's o_proj sees the dense inputs: its compensated output mean equals the dense mean
    o_dense = fam.attn_linears(fam.decoder_layers(model)[0])["o"]
    xs = {}
    h1 = o_dense.register_forward_pre_hook(lambda m, a: xs.setdefault("dense", a[0]))
    h2 = o_new.register_forward_pre_hook(lambda m, a: xs.setdefault("new", a[0]))
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
        out(input_ids=ids, use_cache=False)
    h1.remove(), h2.remove()
    with torch.no_grad():
        mean_dense = o_dense(xs["dense"]).mean((0, 1))
        mean_new = o_new(xs["new"]).mean((0, 1))
    assert torch.allclose(mean_new, mean_dense, atol=1e-4)
    path = export(out, tmp_path / "m")
    back = load_subnet(path)
    with torch.no_grad():
        assert torch.allclose(back(input_ids=ids).logits, out(input_ids=ids).logits, atol=1e-5)
    assert json.loads((path / "config.json").read_text())["nas_llm"]["reform"]["method"] == "bias"


def test_none_equals_slicing_and_bad_method():
    model = tiny_model("llama-gqa")
    plan, ids = _plan(model), _ids()
    a, b = reform(model, plan, ids, "none"), slice_model(model, plan)
    with torch.no_grad():
        assert torch.equal(a(input_ids=ids).logits, b(input_ids=ids).logits)
    with pytest.raises(ValueError, match="admm, exact, bias, flexi, none"):
        reform(model, plan, ids, "obs")


# -- run folders ------------------------------------------------------------------------------


class CharTokenizer:
    """Enough of a tokenizer for nas_llm.model.data.calibration_batch on the tiny vocab."""

    def __call__(self, text, return_tensors=None):
        return {"input_ids": [ord(c) % 128 for c in text]}


def _make_run(tmp_path: Path, model) -> Run:
    text = tmp_path / "calib.txt"
    text.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    space = SubnetSpace.from_model(model, granularity=16)
    d = space.dims
    ranking = Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate)
    subs = [space.dense(), space.uniform(kv_groups=2, neurons=48), space.uniform(neurons=32, drop=[1])]
    run = Run(tmp_path / "run")
    cal = {"source": str(text), "n_samples": 4, "seq_len": 16, "seed": 0}
    # latency_ms: an objective no registry knows, whose traits run.json records (what reform reads)
    run.write_settings({"model": "tiny", "objectives": [{"name": "perplexity", "direction": "minimize"},
                                                        {"name": "latency_ms", "direction": "minimize", "kind": "latency",
                                                         "unit": "ms", "log_scale": False, "measured": True}],
                        "calibration": cal, "objective_args": {"perplexity": cal}})
    ranking.save(run.ranking_file)
    run.write_table(pd.DataFrame({
        "id": [0, 1, 2], "key": [s.key() for s in subs], "subnet": [s.to_json() for s in subs], "source": "init",
        "perplexity": [10.0, 20.0, 30.0], "latency_ms": [3.0, 2.0, 1.0], "pareto": [True, False, True], "feasible": True,
    }))
    return run


def test_reform_run_and_reproduce(tmp_path):
    from nas_llm.reform import reform_run
    from nas_llm.model.data import calibration_batch
    from nas_llm.model.metrics import perplexity

    model, tok = tiny_model("llama-gqa"), CharTokenizer()
    run = _make_run(tmp_path, model)
    before = run.table()
    df = reform_run(run, model, tok, "exact", n_samples=4, seq_len=16, progress=False)
    back = run.table()
    assert list(back["reformed"]) == [True, False, True]
    assert back["latency_ms_reformed"].iloc[[0, 2]].tolist() == [3.0, 1.0] and np.isnan(back["latency_ms_reformed"].iloc[1])
    assert back["perplexity"].tolist() == before["perplexity"].tolist()  # the before-values stay
    s = run.settings()["reform"]
    assert s["method"] == "exact" and s["seed"] == 1 and s["n_samples"] == 4
    # reform_for_run reproduces the reformed model: its perplexity on the run's calibration equals the table's
    sub = run.subnet(2)
    m = reform_for_run(run.path, sub, model, tok, progress=False)
    cal = run.settings()["calibration"]
    ids = calibration_batch(tok, cal["source"], cal["n_samples"], cal["seq_len"], cal["seed"])
    assert perplexity(m, ids) == pytest.approx(df.loc[2, "perplexity_reformed"], rel=1e-9)
    # the dense member is reformed to itself (nothing cut)
    assert df.loc[0, "perplexity_reformed"] == pytest.approx(perplexity(model, ids), rel=1e-6)


def test_reform_run_only_some_ids(tmp_path):
    from nas_llm.reform import reform_run

    model, tok = tiny_model("llama-gqa"), CharTokenizer()
    run = _make_run(tmp_path, model)
    with pytest.raises(ValueError, match=r"not Pareto members.*\[0, 2\]"):
        reform_run(run, model, tok, "exact", n_samples=4, seq_len=16, progress=False, ids=[1])
    reform_run(run, model, tok, "exact", n_samples=4, seq_len=16, progress=False, ids=[2])
    back = run.table()
    assert list(back["reformed"]) == [False, False, True] and np.isnan(back["perplexity_reformed"].iloc[0])
    first = back["perplexity_reformed"].iloc[2]
    reform_run(run, model, tok, "exact", n_samples=4, seq_len=16, progress=False, ids=[0])  # adds a row, keeps row 2
    back = run.table()
    assert list(back["reformed"]) == [True, False, True] and back["perplexity_reformed"].iloc[2] == first
    assert run.settings()["reform"]["rows"] == 2
    with pytest.raises(ValueError, match="other settings"):  # mixing settings across rows would mislabel exports
        reform_run(run, model, tok, "admm", n_samples=4, seq_len=16, progress=False, ids=[0])


def test_reform_for_run_needs_settings(tmp_path):
    model = tiny_model("llama-gqa")
    run = _make_run(tmp_path, model)
    with pytest.raises(ValueError, match="nas-llm reform"):
        reform_for_run(run.path, run.subnet(1), model, CharTokenizer())


# -- the real model ----------------------------------------------------------------------------


@pytest.mark.smollm2
def test_smollm2_reform_lowers_calibration_ppl(smollm2):
    from nas_llm.model.data import calibration_batch
    from nas_llm.model.metrics import perplexity

    model, tok = smollm2
    space = SubnetSpace.from_model(model)
    d = space.dims
    sub = space.uniform(neurons=768)
    plan = Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate).resolve(sub)
    fit = calibration_batch(tok, "wikitext2-valid", 8, 128, seed=1)
    held = calibration_batch(tok, "wikitext2-valid", 4, 128, seed=2)
    plain = perplexity(reform(model, plan, fit, "none"), held)
    exact = perplexity(reform(model, plan, fit, "exact", progress=False), held)
    assert exact < plain


def test_cli_errors_cleanly(tmp_path, capsys):
    from nas_llm.cli import main

    assert main(["reform", str(tmp_path / "nope")]) == 2
    assert "not a nas-llm run folder" in capsys.readouterr().err
    run = _make_run(tmp_path, tiny_model("llama-gqa"))
    with pytest.raises(SystemExit):
        main(["reform", str(run.path), "--method", "obs"])

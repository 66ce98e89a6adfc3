"""Per-layer sensitivity: measured costs equal independently scored single-layer cuts; the priced table is
monotone, zero at the dense width and exact at the measured points; the run folder and the shared cache keep it
(another run of the same settings reuses it, other settings or text do not); a search seeds its first generation
with the allocations (source tags) and reuses the table on resume and in a second seed's run."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from nas_llm.search import SearchConfig, run_search
from nas_llm.search import sensitivity as S
from objectives import ReformedPerplexity
from search_spaces import Subnet
from test_perplexity import CharTokenizer, make_ctx, text_file  # noqa: F401  (fixture)
from tiny import tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


def probe(text_file, **kw):
    return ReformedPerplexity(text_file, n_samples=3, seq_len=18, batch_size=3, reform_samples=6, reform_seq_len=24, **kw)


def test_probe_points_are_inside_the_space():
    c = make_ctx(granularity=16)  # widths 16..96, 3 KV groups
    assert S.probe_points(c.space, 1) == ([48], [2])
    assert S.probe_points(c.space, 3, max_cut=0.9) == ([64, 32, 16], [2, 1])
    with pytest.raises(ValueError, match="points must be >= 1"):
        S.probe_points(c.space, 0)
    with pytest.raises(ValueError, match="fraction in"):
        S.probe_points(c.space, 1, max_cut=1.0)


def test_measured_costs_are_single_layer_cuts_scored_independently(text_file):
    c = make_ctx(granularity=16)
    sens = S.measure(probe(text_file), c, points=2, metric="nll")
    ref = probe(text_file)  # a fresh objective on a fresh context: the naive (sliced-model) path
    c2 = make_ctx(granularity=16)
    base = math.log(ref.naive(c2.space.dense(), c2))
    dense = c2.space.dense().layers
    for i in range(c.space.num_layers):
        for j, w in enumerate(sens.mlp_widths):
            cut = Subnet(tuple(l if k != i else type(l)(l.kv_groups, w, True) for k, l in enumerate(dense)))
            assert sens.mlp_cost[i][j] == pytest.approx(math.log(ref.naive(cut, c2)) - base, abs=1e-5)
        for j, g in enumerate(sens.kv_counts):
            cut = Subnet(tuple(l if k != i else type(l)(g, l.neurons, True) for k, l in enumerate(dense)))
            assert sens.attn_cost[i][j] == pytest.approx(math.log(ref.naive(cut, c2)) - base, abs=1e-5)


def test_kl_costs_are_single_layer_divergences_of_the_sliced_reformed_model(text_file):
    c = make_ctx(granularity=16)
    sens = S.measure(probe(text_file), c, points=2)  # the default metric: KL(dense || cut)
    ref, c2 = probe(text_file, fast=False), make_ctx(granularity=16)  # a sliced copy with the refit weights
    dense = c2.space.dense().layers
    for i in range(c.space.num_layers):
        for j, w in enumerate(sens.mlp_widths):
            cut = Subnet(tuple(l if k != i else type(l)(l.kv_groups, w, True) for k, l in enumerate(dense)))
            assert sens.mlp_cost[i][j] == pytest.approx(ref.divergence(cut, c2), rel=1e-4, abs=1e-9)
        for j, g in enumerate(sens.kv_counts):
            cut = Subnet(tuple(l if k != i else type(l)(g, l.neurons, True) for k, l in enumerate(dense)))
            assert sens.attn_cost[i][j] == pytest.approx(ref.divergence(cut, c2), rel=1e-4, abs=1e-9)
    assert min(v for row in sens.mlp_cost + sens.attn_cost for v in row) > 0  # a divergence is never negative
    with pytest.raises(ValueError, match="metric 'ppl' is not one of kl, nll"):
        S.measure(probe(text_file), c, points=1, metric="ppl")


def test_priced_table_is_monotone_zero_at_dense_and_exact_where_measured(text_file):
    c = make_ctx(granularity=16)
    sens = S.measure(probe(text_file), c, points=1)
    table = sens.table(c.space)
    widths = c.space.neuron_choices
    floor = 0.01 * float(np.median([v for row in sens.mlp_cost for v in row if v > 0]))
    for i in range(c.space.num_layers):
        m, a = table.mlp[i], table.attn[i]
        assert m[-1] == 0 and a[-1] == 0
        assert all(x >= y - 1e-12 for x, y in zip(m, m[1:])) and all(x >= y - 1e-12 for x, y in zip(a, a[1:]))
        assert m[widths.index(sens.mlp_widths[0])] == pytest.approx(max(sens.mlp_cost[i][0], floor), rel=1e-9)
        assert all(v == math.inf for w, v in zip(widths, m) if w < sens.mlp_widths[0])  # deeper than measured
    # the error curves are the refit's: zero at the dense width, growing as the layer is cut
    assert all(e[-1] == 0 and all(x >= y for x, y in zip(e, e[1:])) for e in sens.mlp_error + sens.attn_error)


def test_price_floors_noise_and_never_extrapolates():
    cost, at = [[-0.1, -0.2], [0.1, 0.3]], [[1.0, 2.0], [1.0, 2.0]]
    curve = [[4.0, 2.0, 1.5, 1.0, 0.5, 0.0]] * 2
    out = S._price(cost, at, curve)
    assert out[1] == pytest.approx([math.inf, 0.3, 0.2, 0.1, 0.05, 0.0])  # linear in the error between measured points
    floor = 0.01 * 0.2  # 1% of the median positive measurement
    assert out[0][1:] == pytest.approx([floor, floor, floor, floor / 2, 0.0])  # noise below zero is floored, not free


def test_run_folder_caches_the_table(tmp_path, text_file, monkeypatch):
    c = make_ctx(granularity=16)
    a = S.load_or_measure(tmp_path, probe(text_file), c, 1, {"k": 1})
    assert (tmp_path / S.SENSITIVITY_FILE).is_file()
    monkeypatch.setattr(S, "measure", lambda *a, **k: pytest.fail("measured again"))
    assert S.load_or_measure(tmp_path, probe(text_file), c, 1, {"k": 1}) == a
    monkeypatch.undo()
    b = S.load_or_measure(tmp_path, probe(text_file), c, 1, {"k": 2})  # other settings: measured anew
    assert b.settings == {"k": 2, "metric": "kl"}  # the default metric joins the settings it was measured with
    assert json.loads((tmp_path / S.SENSITIVITY_FILE).read_text())["settings"] == {"k": 2, "metric": "kl"}


def test_shared_cache_serves_other_runs_of_the_same_settings_only(tmp_path, text_file, monkeypatch):
    c, cache = make_ctx(granularity=16), tmp_path / "cache"
    a = S.load_or_measure(tmp_path / "r1", probe(text_file), c, 1, {"k": 1}, cache=cache, cache_extra={"t": "x"})
    assert a.source == "measured" and S.shared_path(cache, {"k": 1, "metric": "kl"}, {"t": "x"}).is_file()
    monkeypatch.setattr(S, "measure", lambda *a, **k: pytest.fail("measured again"))
    b = S.load_or_measure(tmp_path / "r2", probe(text_file), c, 1, {"k": 1}, cache=cache, cache_extra={"t": "x"})
    assert b == a and b.source == "cache" and (tmp_path / "r2" / S.SENSITIVITY_FILE).is_file()
    assert S.load_or_measure(tmp_path / "r2", probe(text_file), c, 1, {"k": 1}, cache=cache).source == "run"
    assert "source" not in json.loads((tmp_path / "r2" / S.SENSITIVITY_FILE).read_text())
    monkeypatch.undo()
    calls = []
    real = S.measure
    monkeypatch.setattr(S, "measure", lambda *a, **k: calls.append(1) or real(*a, **k))
    # other text behind the same names: another key, measured anew
    assert S.load_or_measure(tmp_path / "r3", probe(text_file), c, 1, {"k": 1}, cache=cache,
                             cache_extra={"t": "y"}).source == "measured" and len(calls) == 1
    # a torn or foreign file in the cache is measured over, not trusted
    S.shared_path(cache, {"k": 2, "metric": "kl"}).write_text("{not json")
    d = S.load_or_measure(tmp_path / "r4", probe(text_file), c, 1, {"k": 2}, cache=cache)
    assert d.source == "measured" and len(calls) == 2
    assert json.loads(S.shared_path(cache, {"k": 2, "metric": "kl"}).read_text())["settings"] == {"k": 2, "metric": "kl"}


def test_a_table_of_one_metric_never_serves_the_other(tmp_path, text_file, monkeypatch):
    """nll tables keep the key they had before the metric existed (a resumed old run reuses its table); a KL
    request never gets an nll table nor the reverse."""
    c, cache = make_ctx(granularity=16), tmp_path / "cache"
    old = S.load_or_measure(tmp_path / "r", probe(text_file), c, 1, {"k": 1}, cache=cache, metric="nll")
    assert old.settings == {"k": 1} and S.shared_path(cache, {"k": 1}).is_file()
    calls = []
    real = S.measure
    monkeypatch.setattr(S, "measure", lambda *a, **k: calls.append(a[-1] if len(a) > 5 else k.get("metric")) or real(*a, **k))
    kl = S.load_or_measure(tmp_path / "r", probe(text_file), c, 1, {"k": 1}, cache=cache)
    assert kl.source == "measured" and calls == ["kl"] and kl.mlp_cost != old.mlp_cost
    assert S.load_or_measure(tmp_path / "r2", probe(text_file), c, 1, {"k": 1}, cache=cache, metric="nll") == old
    assert S.load_or_measure(tmp_path / "r3", probe(text_file), c, 1, {"k": 1}, cache=cache) == kl and calls == ["kl"]


def test_unwritable_shared_cache_warns_and_keeps_the_run_copy(tmp_path, text_file):
    c = make_ctx(granularity=16)
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write the shared sensitivity cache"):
        a = S.load_or_measure(tmp_path / "r", probe(text_file), c, 1, {"k": 1}, cache=blocker)
    assert a.source == "measured" and (tmp_path / "r" / S.SENSITIVITY_FILE).is_file()


def test_search_seeds_allocations_and_reuses_the_table_on_resume(tmp_path, text_file, monkeypatch):
    cfg = SearchConfig(out=str(tmp_path / "r"), objectives=["perplexity_reformed", "params_ratio"],
                       constraints=["params_ratio in [0.55, 0.85]"], evaluations=40, pop_size=4, granularity=16,
                       calibration=str(text_file), calib_samples=4, calib_seq_len=16, ppl_samples=4, ppl_seq_len=16,
                       importance="wanda", allow_layer_drop=False, sens_samples=2, sens_seq_len=16, progress=False)

    def go(config):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return run_search(config, model=tiny_model(), tokenizer=CharTokenizer())

    monkeypatch.setenv("NAS_LLM_CACHE", str(tmp_path / "cache"))
    res = go(cfg)
    settings = json.loads((tmp_path / "r" / "run.json").read_text())
    made = settings["alloc"]["made"]
    assert settings["alloc"]["sensitivity_from"] == "measured" and settings["alloc"]["sensitivity_s"] > 0
    t = res.table
    alloc_keys = set(t.loc[t["source"] == "alloc", "key"])
    assert made and alloc_keys and alloc_keys <= {m["key"] for m in made}
    assert (t["source"] == "alloc-mut").any()
    assert all(0.55 <= m["params_ratio"] <= 0.85 for m in made)
    monkeypatch.setattr(S, "measure", lambda *a, **k: pytest.fail("the table was measured again on resume"))
    from dataclasses import replace

    go(replace(cfg, resume=True, evaluations=44))
    assert json.loads((tmp_path / "r" / "run.json").read_text())["alloc"]["sensitivity_from"] == "run"
    # a second seed in another folder: the shared cache's table, the same allocation seeds, no measuring time
    go(replace(cfg, out=str(tmp_path / "r2"), seed=1))
    alloc2 = json.loads((tmp_path / "r2" / "run.json").read_text())["alloc"]
    assert alloc2["sensitivity_from"] == "cache" and alloc2["sensitivity_s"] == 0
    assert [m["key"] for m in alloc2["made"]] == [m["key"] for m in made]
    with pytest.raises(pytest.fail.Exception, match="measured again"):  # --no-sens-cache: measured anew
        go(replace(cfg, out=str(tmp_path / "r3"), seed=1, sens_cache=False))


def test_kl_on_a_model_with_a_logit_transform_is_a_clear_error_before_measuring(tmp_path, text_file, monkeypatch):
    model = tiny_model()
    model.config.final_logit_softcapping = 30.0
    cfg = SearchConfig(out=str(tmp_path / "r"), objectives=["perplexity_reformed", "params_ratio"],
                       constraints=["params_ratio in [0.55, 0.85]"], evaluations=8, pop_size=4, granularity=16,
                       calibration=str(text_file), calib_samples=4, calib_seq_len=16, ppl_samples=4, ppl_seq_len=16,
                       importance="wanda", sens_samples=2, sens_seq_len=16, progress=False, sens_cache=False)
    monkeypatch.setattr(S, "measure", lambda *a, **k: pytest.fail("measured"))
    with pytest.raises(ValueError, match="pass --sens-metric nll, or --no-alloc"):
        run_search(cfg, model=model, tokenizer=CharTokenizer())

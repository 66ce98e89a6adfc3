"""Latency predictors: the interface, the lookup-table algebra (against a synthetic additive device),
the disk cache, roofline closed forms, user predictors by import path, and clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import objectives.lut
import objectives.predictors as P
import objectives.roofline
from objectives import Context, LatencyResult, get_objective
from objectives.predictors import (LatencyPredictor, LookupTablePredictor, RooflinePredictor, checked_predict,
                                   get_predictor, operator_costs, sample_spread)
from objectives.testing import LatencyPredictorTestSuite
from search_spaces import Ranking, SubnetSpace, get_family
from tiny import tiny_model

GRAN = 16


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama-gqa")


@pytest.fixture(scope="module")
def space(model):
    return SubnetSpace.from_model(model, GRAN)


# -- a synthetic device: time is exactly additive in the shapes ------------------------------------
EMBED, HEAD, LAYER, PER_HEAD, PER_NEURON = 1e-3, 5e-3, 2e-4, 1e-5, 3e-7


def synthetic_time(m, body_only: bool) -> float:
    fam = get_family(m)
    t = EMBED + (0 if body_only else HEAD)
    for layer in fam.decoder_layers(m):
        heads = fam.attn_linears(layer)["q"].out_features / m.config.head_dim
        t += LAYER + PER_HEAD * heads + PER_NEURON * fam.mlp_linears(layer)["gate"].out_features
    return t


PROBE_SLOWDOWN = {"factor": 1.0}  # >1: head-less (probe) timings taken in a slower minute than the real model's


@pytest.fixture
def fake_device(monkeypatch):
    calls = []

    def fake(builders, mode="prefill", batch=1, seq_len=128, rounds=3, min_run_time=0.2, warmup=2,
             compiled=False, body_only=False, progress=True, stat="median"):
        out = {}
        for name, build in builders.items():
            bo = body_only.get(name, False) if isinstance(body_only, dict) else body_only
            t = synthetic_time(build(), bo) * (PROBE_SLOWDOWN["factor"] if bo else 1.0)
            calls.append((name, stat) if stat != "median" else name)
            out[name] = LatencyResult(t, 0.0, 1, mode, batch, seq_len, "cpu", compiled, [t])
        return out

    monkeypatch.setattr(objectives.lut, "measure_interleaved", fake)  # where the lookup table times its probes
    return calls


def sliced_time(model, space, subnet) -> float:
    from nas_llm.model.slicing import slice_model

    d = space.dims
    rank = Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate)
    return synthetic_time(slice_model(model, rank.resolve(subnet)), body_only=False)


@pytest.mark.timing_checks  # a synthetic device: its timings must pass the check
@pytest.mark.parametrize("stride,slowdown", [(1, 1.0), (2, 1.0), (1, 1.3)])
def test_lut_reproduces_an_additive_device_exactly(model, space, fake_device, tmp_path, stride, slowdown, monkeypatch):
    """Exact on an additive device, also when the probe was timed 30 % slower than the real model
    (the real model's dense and half-dropped timings calibrate the probe's layer time and deltas)."""
    monkeypatch.setitem(PROBE_SLOWDOWN, "factor", slowdown)
    lut = LookupTablePredictor(granularity=GRAN, neuron_stride=stride, cache_dir=tmp_path, progress=False)
    lut.setup(model)
    assert lut.measured
    t = lut.table
    assert t["layer_dense_s"] == pytest.approx(LAYER + PER_HEAD * 6 + PER_NEURON * 96)
    assert t["const_s"] == pytest.approx(EMBED + HEAD)
    assert t["attn_delta_s"]["1"] == pytest.approx(-PER_HEAD * 4)  # 3 -> 1 KV groups = 6 -> 2 query heads
    rng = np.random.default_rng(0)
    subs = [space.dense(), space.uniform(1, GRAN), space.uniform(drop=[0, 2])] + [space.sample(rng, 0.3) for _ in range(6)]
    for s in subs:
        assert lut.predict(s) == pytest.approx(sliced_time(model, space, s), rel=1e-9), s.key()


@pytest.mark.timing_checks  # a synthetic device: its timings must pass the check
def test_lut_cache_on_disk_is_reused_and_keyed(model, fake_device, tmp_path):
    kw = dict(granularity=GRAN, cache_dir=tmp_path, progress=False)
    a = LookupTablePredictor(**kw)
    a.setup(model)
    n = len(fake_device)
    b = LookupTablePredictor(**kw)
    b.setup(model)
    assert not b.measured and len(fake_device) == n and b.table == a.table and b.path == a.path
    c = LookupTablePredictor(seq_len=64, **kw)
    c.setup(model)
    assert c.measured and c.path != a.path
    key = a.cache_key(model)
    assert {"device", "dtype", "dims", "torch", "mode", "seq_len"} <= set(key)
    d = LookupTablePredictor(refresh=True, **kw)
    d.setup(model)
    assert d.measured and d.path == a.path
    n = len(fake_device)
    e = LookupTablePredictor(stat="min", **kw)  # a fastest-block table is its own table
    e.setup(model)
    assert e.measured and e.path != a.path and e.cache_key(model)["stat"] == "min" and "stat" not in key
    assert all(c[1] == "min" for c in fake_device[n:])
    with pytest.raises(ValueError, match="stat"):
        LookupTablePredictor(stat="p90")


@pytest.mark.timing_checks
def test_lut_refuses_contradicting_timings_and_caches_nothing(model, fake_device, tmp_path, monkeypatch):
    """A busy minute that makes the real model time faster than its half (a negative layer time) is refused
    before anything is cached; the same device quiet builds the table."""
    real = objectives.lut.measure_interleaved

    def busy(builders, **kw):
        out = real(builders, **kw)
        out["full_half"].median_s = 3 * out["full"].median_s
        return out

    monkeypatch.setattr(objectives.lut, "measure_interleaved", busy)
    lut = LookupTablePredictor(granularity=GRAN, cache_dir=tmp_path, progress=False)
    with pytest.raises(RuntimeError, match=r"lookup table: the timings contradict each other \(the model .* is not slower "
                                           r"than its half .*nothing was cached"):
        lut.setup(model)
    assert lut.table is None and not list(tmp_path.iterdir())
    monkeypatch.setattr(objectives.lut, "measure_interleaved", real)
    lut.setup(model)
    assert lut.measured and lut.path.is_file()


def test_lut_real_measurement_smoke(model, space, tmp_path):
    lut = LookupTablePredictor(seq_len=8, granularity=32, rounds=1, min_run_time=0.005, cache_dir=tmp_path, progress=False)
    lut.setup(model)
    assert set(lut.table["attn_delta_s"]) == {"1", "2", "3", "1x1", "2x1", "3x1"} and set(lut.table["mlp_delta_s"]) == {"32", "64", "96"}
    assert lut.table["full_dense_s"] > 0
    assert math.isfinite(checked_predict(lut, SubnetSpace.from_model(model, 32).dense()))


def test_lut_errors(model, space):
    lut = LookupTablePredictor()
    with pytest.raises(RuntimeError, match="setup"):
        lut.predict(space.dense())
    with pytest.raises(ValueError, match="probe_layers"):
        LookupTablePredictor(probe_layers=1)
    with pytest.raises(ValueError, match="mode"):
        LookupTablePredictor(mode="train")


# -- roofline ---------------------------------------------------------------------------------------
def test_operator_costs_hand_count(space):
    d = space.dims  # hidden 48, 6 heads / 3 groups, head_dim 8
    ops = {n: (f, b) for n, f, b in operator_costs(d, 2, 32, "prefill", 2, 5, 4)}
    T = 10  # tokens
    assert ops["q"][0] == 2 * T * 48 * 32  # 2 groups x 2 heads x 8
    assert ops["k"][0] == 2 * T * 48 * 16
    assert ops["o"][0] == 2 * T * 32 * 48
    assert ops["down"][0] == 2 * T * 32 * 48
    assert ops["q"][1] == 4 * (48 * 32 + T * (48 + 32))
    assert ops["attention"][0] == 2 * 2 * T * 2.5 * 32  # causal: half of 5 positions on average
    dec = {n: (f, b) for n, f, b in operator_costs(d, 3, 96, "decode", 1, 100, 2)}
    assert dec["attention"][1] == 2 * (2 * 48 + 2 * 101 * 24)  # the KV cache of 101 positions is read


def test_roofline_compute_bound_equals_total_flops(model, space):
    """With 1 FLOP/s and infinite bandwidth the prediction is the FLOP count; linear FLOPs = 2 x tokens x params."""
    r = RooflinePredictor(mode="prefill", batch=1, seq_len=4, peaks={"flops_per_s": 1.0, "bytes_per_s": 1e30, "op_overhead_s": 0.0})
    r.setup(model)
    d = space.dims
    for s in (space.dense(), space.uniform(1, 32, drop=[1])):
        kept = [c for c in s.layers if c.keep]
        linear_params = space.params(s) - len(kept) * 2 * d.hidden  # minus the two RMSNorm weights per layer
        attn = sum(2 * 2 * 4 * 2 * c.kv_groups * d.q_per_group * d.head_dim for c in kept)
        head = 2 * d.hidden * d.vocab
        assert r.predict(s) == pytest.approx(2 * 4 * linear_params + attn + head)


def test_roofline_measures_and_caches_peaks(model, tmp_path):
    r = RooflinePredictor(cache_dir=tmp_path)
    monkey = {"n": 0}
    orig = objectives.roofline.measure_peaks

    def counting(*a, **k):
        monkey["n"] += 1
        return {"flops_per_s": 1e10, "bytes_per_s": 1e9, "op_overhead_s": 1e-6}

    objectives.roofline.measure_peaks = counting
    try:
        r.setup(model)
        RooflinePredictor(cache_dir=tmp_path).setup(model)
    finally:
        objectives.roofline.measure_peaks = orig
    assert monkey["n"] == 1 and len(list(tmp_path.glob("peaks-*.json"))) == 1


# -- interface, user predictors, errors --------------------------------------------------------------
def user_predictor(subnet):
    """A plain function predictor, found by import path."""
    return 1e-3 * sum(1 + c.neurons / 96 for c in subnet.layers if c.keep)


class UserPredictor(LatencyPredictor):
    name = "user_class"

    def predict(self, subnet):
        return 1e-4 * sum(c.kv_groups for c in subnet.layers if c.keep)


def test_user_predictors_by_import_path(space):
    f = get_predictor(f"{__name__}:user_predictor")
    assert f.name == "user_predictor" and f.predict(space.dense()) == pytest.approx(8e-3)
    c = get_predictor(f"{__name__}:UserPredictor")
    assert isinstance(c, UserPredictor) and c.predict(space.dense()) == pytest.approx(1.2e-3)
    with pytest.raises(ImportError, match="no attribute 'nope'"):
        get_predictor(f"{__name__}:nope")
    with pytest.raises(KeyError, match="Did you mean 'lut'"):
        get_predictor("lutt")


@pytest.mark.parametrize("bad, err, msg", [(float("nan"), ValueError, "nan"), (-1.0, ValueError, "negative"),
                                           (float("inf"), ValueError, "inf"), ("fast", TypeError, "float")])
def test_checked_predict_rejects_bad_values(space, bad, err, msg):
    with pytest.raises(err, match=msg):
        checked_predict(P.FunctionPredictor(lambda s: bad, name="broken"), space.dense())
    with pytest.raises(err, match="broken"):
        checked_predict(P.FunctionPredictor(lambda s: bad, name="broken"), space.dense())


@pytest.mark.timing_checks  # a synthetic device: its timings must pass the check
def test_predictors_as_objectives(model, space, fake_device, tmp_path):
    d = space.dims
    ctx = Context(model, None, space, Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate))
    lut = get_objective("latency_lut", granularity=GRAN, cache_dir=tmp_path, progress=False)
    s = space.uniform(2, 48, drop=[3])
    assert lut.name == "latency_lut" and lut.unit == "ms"
    assert lut.score(s, ctx) == pytest.approx(sliced_time(model, space, s) * 1e3)
    user = get_objective("latency_predicted", predictor=f"{__name__}:user_predictor")
    assert user.score(space.dense(), ctx) == pytest.approx(8.0)
    roof = get_objective("latency_roofline", peaks={"flops_per_s": 1e9, "bytes_per_s": 1e9, "op_overhead_s": 0})
    assert roof.score(s, ctx) < roof.score(space.dense(), ctx)
    broken = get_objective("latency_predicted", predictor=lambda s: -1.0)
    with pytest.raises(ValueError, match="negative"):
        broken.score(s, ctx)


def test_sample_spread_spans_sizes(space):
    rng = np.random.default_rng(0)
    ratios = [space.ratio(sample_spread(space, rng)) for _ in range(30)]
    assert min(ratios) < 0.5 < 0.85 < max(ratios)


# -- the conformance suite run on the built-in and a user predictor ------------------------------------
class _TinySpace(LatencyPredictorTestSuite):
    @pytest.fixture
    def space(self, model):
        return SubnetSpace.from_model(model, GRAN)


class TestLUTConformance(_TinySpace):
    @pytest.fixture
    def predictor(self, model, fake_device, tmp_path):
        p = LookupTablePredictor(granularity=GRAN, cache_dir=tmp_path, progress=False)
        p.setup(model)
        return p


class TestRooflineConformance(_TinySpace):
    @pytest.fixture
    def predictor(self, model):
        p = RooflinePredictor(mode="decode", seq_len=32, peaks={"flops_per_s": 1e10, "bytes_per_s": 1e9, "op_overhead_s": 1e-6})
        p.setup(model)
        return p


class TestUserFunctionConformance(_TinySpace):
    @pytest.fixture
    def predictor(self):
        return get_predictor(f"{__name__}:user_predictor")

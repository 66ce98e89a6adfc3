"""Measured latency: the timing contract, decode-step correctness, interleaving, clear errors.

No speed is asserted here (timings go to benchmarks/RESULTS.md); only shapes of results and
that the timed work is the right work.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from objectives import Context, Latency, LatencyResult, get_objective, measure_interleaved, measure_latency
from objectives.latency import _rewind, make_runner, mape, spearman
from search_spaces import Ranking, SubnetSpace
from tiny import tiny_model

FAST = dict(min_run_time=0.01, warmup=1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return tiny_model("llama-gqa")


@pytest.mark.parametrize("mode", ["prefill", "decode"])
def test_measure_latency_returns_median_and_iqr(model, mode):
    r = measure_latency(model, mode, batch=2 if mode == "prefill" else 1, seq_len=16, rounds=2, **FAST)
    assert isinstance(r, LatencyResult)
    assert r.median_s > 0 and r.iqr_s >= 0 and r.n_runs >= 2 and len(r.round_medians_s) == 2
    assert r.mode == mode and r.seq_len == 16 and r.device.startswith("cpu")
    assert "ms" in str(r) and r.to_dict()["median_ms"] == pytest.approx(r.median_s * 1e3)


def test_spread_is_range_over_median():
    r = LatencyResult(2.0, 0.1, 3, "prefill", 1, 8, "cpu", round_medians_s=[1.0, 2.0, 4.0])
    assert r.spread == pytest.approx((4.0 - 1.0) / 2.0)
    assert LatencyResult(1.0, 0.0, 1, "prefill", 1, 8, "cpu", round_medians_s=[1.0]).spread == 0


def test_round_value_is_the_median_or_the_fastest_block():
    from types import SimpleNamespace

    from objectives.latency import round_value

    m = SimpleNamespace(median=3.0, times=[5.0, 2.0, 3.0, 9.0])
    assert round_value(m) == 3.0 and round_value(m, "median") == 3.0 and round_value(m, "min") == 2.0


def test_stat_min_reports_each_rounds_fastest_block(model, monkeypatch):
    """With ``stat="min"`` every round value is that round's fastest block (and never above its median)."""
    import objectives.latency as lat

    seen = []
    real = lat.time_runner

    def spy(*a, **k):
        m = real(*a, **k)
        seen.append(m)
        return m

    monkeypatch.setattr(lat, "time_runner", spy)
    r = measure_latency(model, seq_len=8, rounds=3, stat="min", **FAST)
    assert r.stat == "min" and r.round_medians_s == [min(m.times) for m in seen] == r.round_fastest_s
    assert all(v <= m.median for v, m in zip(r.round_medians_s, seen)) and "min" in str(r)
    seen.clear()
    res = measure_interleaved({"a": lambda: model}, seq_len=8, rounds=2, progress=False, stat="min", **FAST)
    assert res["a"].round_medians_s == [min(m.times) for m in seen]
    seen.clear()
    r = measure_latency(model, seq_len=8, rounds=2, **FAST)  # the default keeps the fastest blocks too
    assert r.round_medians_s == [m.median for m in seen] and r.round_fastest_s == [min(m.times) for m in seen]
    with pytest.raises(ValueError, match="'mean'.*'median'.*'min'"):
        measure_latency(model, seq_len=8, stat="mean")
    with pytest.raises(ValueError, match="'mean'"):
        get_objective("latency", stat="mean")


@pytest.mark.parametrize("family", ["llama-gqa", "qwen3"])
def test_decode_step_is_one_token_after_the_prompt_every_time(family):
    """The timed decode step must see the same context each call (the cache is rewound)."""
    m = tiny_model(family)
    L = 10
    step = make_runner(m, "decode", seq_len=L, seed=3)
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, m.config.vocab_size, (1, L), generator=g)
    tok = torch.randint(0, m.config.vocab_size, (1, 1), generator=g)
    with torch.no_grad():
        ref = m(input_ids=torch.cat([ids, tok], 1)).logits[0, -1]
        for _ in range(3):
            out = step().logits[0, -1]
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_rewind_dynamic_cache(model):
    from transformers import DynamicCache

    c = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=torch.zeros(1, 5, dtype=torch.long), past_key_values=c, use_cache=True)
    _rewind(c, 2)
    assert c.get_seq_length() == 3


def test_prefill_times_a_forward_over_batch_by_seq(model):
    calls = []
    h = model.model.embed_tokens.register_forward_hook(lambda mod, a, out: calls.append(tuple(a[0].shape)))
    try:
        make_runner(model, "prefill", batch=3, seq_len=7)()
    finally:
        h.remove()
    assert calls == [(3, 7)]


def test_cuda_on_a_machine_without_it_is_a_clear_error(model):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        measure_latency(model, device="cuda")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        Latency(device="cuda")
    from nas_llm.cli import main

    assert main(["latency", "measure", "--device", "cuda"]) == 2


def test_bad_arguments_are_clear_errors(model):
    with pytest.raises(ValueError, match="mode 'train'"):
        measure_latency(model, mode="train")
    with pytest.raises(ValueError, match="seq_len"):
        measure_latency(model, seq_len=0)
    with pytest.raises(ValueError, match="dtype 'int3'"):
        Latency(dtype="int3")
    with pytest.raises(ValueError, match="'tpu'"):
        measure_latency(model, device="tpu")


def test_interleaved_measures_every_model_every_round(model):
    built = []

    def build(name):
        def f():
            built.append(name)
            return model
        return f

    res = measure_interleaved({"a": build("a"), "b": build("b")}, seq_len=8, rounds=3, progress=False, **FAST)
    assert built == ["a", "b"] * 3  # A B A B A B
    assert set(res) == {"a", "b"} and all(len(r.round_medians_s) == 3 for r in res.values())


def test_latency_objective_times_the_sliced_model(model):
    space = SubnetSpace.from_model(model, 32)
    d = space.dims
    ctx = Context(model, None, space, Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate))
    obj = get_objective("latency", seq_len=8, min_run_time=0.01)
    assert isinstance(obj, Latency) and obj.unit == "ms" and obj.direction == "minimize"
    shapes = [tuple(p.shape) for p in model.parameters()]
    sub = space.uniform(kv_groups=1, neurons=32, drop=[0])
    r = obj.measure(sub, ctx)
    assert r.median_s > 0
    assert [tuple(p.shape) for p in model.parameters()] == shapes  # the dense model is untouched
    assert math.isfinite(obj.score(sub, ctx))


def test_spearman_and_mape_closed_forms():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks [1,2,3,4] vs [2,1,3,4]: rho = 1 - 6*sum(d^2)/(n(n^2-1)) = 1 - 6*2/60
    assert spearman([1, 2, 3, 4], [2, 1, 3, 4]) == pytest.approx(0.8)
    assert mape([1.1, 0.9], [1.0, 1.0]) == pytest.approx(10.0)
    assert math.isnan(spearman([1.0], [2.0]))


def test_cli_measure_prints_and_writes_json(tmp_path, monkeypatch, capsys):
    """The CLI path on a tiny model saved as a local folder."""
    m = tiny_model("llama-gqa")
    m.save_pretrained(tmp_path / "m")
    from transformers import PreTrainedTokenizerFast
    from tokenizers import Tokenizer, models

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    tok.save_pretrained(tmp_path / "m")
    from nas_llm.cli import main

    out = tmp_path / "lat.json"
    rc = main(["latency", "measure", "--model", str(tmp_path / "m"), "--ratio", "0.6", "--granularity", "32",
               "--mode", "both", "--seq-len", "8", "--rounds", "1", "--min-run-time", "0.01", "--json", str(out),
               "--stat", "min"])
    assert rc == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "prefill" in text and "decode" in text
    import json

    data = json.loads(out.read_text())
    assert set(data["results"]) == {"prefill", "decode"} and 0 < data["params_ratio"] < 1
    np.testing.assert_array_less(0, [v["median_s"] for v in data["results"].values()])
    assert all(v["stat"] == "min" for v in data["results"].values())

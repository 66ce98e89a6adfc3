"""Search problem and both drivers on tiny spaces with cheap objectives (brute-force references)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from nas_llm.front import pareto_mask
from nas_llm.model.metrics import perplexity
from nas_llm.search import SearchProblem, run_optuna, run_pymoo, run_random
from nas_llm.search.population import initial_population
from nas_llm.search.problem import check_objective_matrix
from objectives import Context, Objective
from search_spaces import ModelDims, Ranking, SubnetSpace

DIMS = ModelDims(num_layers=6, hidden=32, num_heads=4, num_kv_heads=2, head_dim=8, intermediate=96, vocab=64,
                 tied_embeddings=False)


class Loss(Objective):
    """A cheap, deterministic 'error' that rises as the subnet shrinks (conflicts with params_ratio).

    ``log`` (a path) gets one line per finished score: the call counter for cache tests.
    """

    name = "loss"

    def __init__(self, log: str | None = None, sleep: float = 0.0):
        self.log, self.sleep, self.calls = log, sleep, 0

    def score(self, subnet, ctx):
        if self.sleep:
            import time

            time.sleep(self.sleep)
        d = ctx.space.dims
        w = np.linspace(1.0, 2.0, d.num_layers)
        v = 0.0
        for i, c in enumerate(subnet.layers):
            if not c.keep:
                v += 3.0 * w[i]
            else:
                v += w[i] * ((1 - c.neurons / d.intermediate) ** 2 + 0.7 * (1 - c.kv_groups / d.num_kv_heads) ** 1.5)
        self.calls += 1
        if self.log:
            with open(self.log, "a") as f:
                f.write(subnet.key() + "\n")
        return float(v)


def make_ctx(dims: ModelDims = DIMS, granularity: int = 16) -> Context:
    space = SubnetSpace(dims, granularity)
    rk = Ranking.identity(dims.num_layers, dims.num_kv_heads, dims.intermediate)
    rk.layer_scores = np.linspace(0.1, 1.0, dims.num_layers)[::-1].copy()  # early layers matter more
    return Context(None, None, space, rk)


def problem(**kw) -> SearchProblem:
    kw.setdefault("objectives", [Loss(), "params_ratio"])
    return SearchProblem(make_ctx(), **kw)


def brute_front(df: pd.DataFrame, names, directions) -> set[int]:
    ok = df["feasible"].to_numpy(bool) & (df["fidelity"].to_numpy(float) >= 1)
    F = df[names].to_numpy(float) * np.array([-1 if d == "maximize" else 1 for d in directions])
    ids = set()
    for i in np.flatnonzero(ok):
        dominated = any(np.all(F[j] <= F[i]) and np.any(F[j] < F[i]) for j in np.flatnonzero(ok) if j != i)
        if not dominated:
            ids.add(int(df["id"].iloc[i]))
    return ids


def check_front(res):
    df = res.table
    assert set(df.loc[df["pareto"], "id"].astype(int)) == brute_front(df, res.objectives, res.directions)
    assert df["key"].is_unique and df["id"].is_unique


# -- drivers ------------------------------------------------------------------------------------
def test_pymoo_front_is_the_brute_force_front_and_seed_reproducible(tmp_path):
    res = run_pymoo(problem(), 60, pop_size=12, seed=1, run_dir=tmp_path / "a", progress=False)
    assert len(res.table) == 60
    check_front(res)
    again = run_pymoo(problem(), 60, pop_size=12, seed=1, progress=False)
    assert sorted(res.front["key"]) == sorted(again.front["key"])
    # the run folder follows the contract
    for f in ("evaluations.csv", "evaluations.parquet", "hypervolume.csv", "front.json", "checkpoint.json"):
        assert (tmp_path / "a" / f).is_file(), f
    front = json.loads((tmp_path / "a" / "front.json").read_text())
    assert sorted(front["ids"]) == sorted(res.front["id"].astype(int))
    hv = pd.read_csv(tmp_path / "a" / "hypervolume.csv")
    assert hv["hypervolume"].is_monotonic_increasing and hv["evaluations"].iloc[-1] == 60


def test_optuna_front_is_the_brute_force_front_and_seed_reproducible(tmp_path):
    res = run_optuna(problem(), 40, pop_size=10, seed=2, run_dir=tmp_path / "o", progress=False)
    check_front(res)
    assert (tmp_path / "o" / "study.db").is_file()
    # trials store the encoding; the enqueued first generation is tagged
    assert {"dense", "uniform"} <= set(res.table["source"])
    again = run_optuna(problem(), 40, pop_size=10, seed=2, progress=False)  # in-memory storage
    assert sorted(res.front["key"]) == sorted(again.front["key"])
    with pytest.raises(FileExistsError, match="--resume"):
        run_optuna(problem(), 40, pop_size=10, seed=2, run_dir=tmp_path / "o", progress=False)


@pytest.mark.parametrize("sampler", ["tpe", "random"])
def test_optuna_other_samplers(sampler):
    res = run_optuna(problem(), 24, sampler=sampler, pop_size=8, progress=False)  # > the 19 seeds: the sampler runs
    check_front(res)


def test_random_driver_and_nsga3(tmp_path):
    res = run_random(problem(), 30, batch=10, progress=False)
    assert len(res.table) == 30 and set(res.table["source"]) == {"random"}
    check_front(res)
    three = problem(objectives=[Loss(), "params_ratio", "kv_cache_bytes"])
    res3 = run_pymoo(three, 40, pop_size=10, progress=False)
    assert "nsga3" in set(res3.table["source"])
    check_front(res3)


# -- cache, constraints, fidelity --------------------------------------------------------------------
class _NoCopy:
    """Stands for the model and caches a real search holds: copying it is a bug (2 GB per generation on SmolLM2)."""

    def __deepcopy__(self, memo):
        raise AssertionError("the search problem (model, caches) was deep-copied")


def test_pymoo_never_copies_the_search_problem():
    """pymoo's StaticProblem deep-copies what it wraps; the driver must hand it a shell, not the SearchProblem."""
    sp = problem()
    sp.ctx.cache["heavy"] = _NoCopy()
    res = run_pymoo(sp, 40, pop_size=8, seed=0, progress=False)
    check_front(res)
    assert len(res.table) == 40


def test_cache_prevents_re_evaluation(tmp_path):
    loss = Loss()
    sp = problem(objectives=[loss, "params_ratio"])
    s = sp.space.uniform(1, 48)
    a = sp.evaluate(s, "x")
    b = sp.evaluate(sp.space.decode(sp.space.encode(s)), "y")
    assert a is b and loss.calls == 1 and sp.n_calls == 1
    res = run_pymoo(sp, 50, pop_size=10, progress=False)
    assert loss.calls == len(res.table) == sp.n_calls == 50


def test_infeasible_never_on_front():
    sp = problem(constraints=["params_ratio in [0.4, 0.7]"])
    res = run_pymoo(sp, 60, pop_size=12, progress=False)
    t = res.table
    assert (~t["feasible"]).any() and t["feasible"].any()
    assert t.loc[t["pareto"], "feasible"].all()
    assert t.loc[t["pareto"], "params_ratio"].between(0.4, 0.7).all()
    check_front(res)
    # optuna path (set_constraint / constraints_func) too
    res_o = run_optuna(problem(constraints=["params_ratio in [0.4, 0.7]"]), 30, pop_size=10, progress=False)
    assert res_o.table.loc[res_o.table["pareto"], "feasible"].all()


def test_importance_initialised_first_generation():
    ctx = make_ctx()
    pop = initial_population(ctx.space, ctx.ranking, 30, seed=0)
    keys = [s.key() for s, _ in pop]
    assert len(set(keys)) == len(keys) >= 30
    sources = {src for _, src in pop}
    assert {"dense", "uniform", "init", "baseline:drop_last"} <= sources
    assert pop[0][0] == ctx.space.dense()
    # BI-drop variants drop the lowest-scored (last) layers first
    dropped = [s for s, src in pop if src == "init" and not all(c.keep for c in s.layers)]
    assert dropped and all(not s.layers[-1].keep for s in dropped[:2])


class TinyPPL(Objective):
    """Perplexity of the masked tiny model on ``n`` calibration rows; fidelity scales ``n``."""

    name = "ppl"

    def __init__(self, n: int = 8):
        self.n = n

    def score(self, subnet, ctx):
        with ctx.masked(subnet) as m:
            return perplexity(m, ctx.cache["ids"][: self.n])

    def at_fidelity(self, f):
        return TinyPPL(max(1, int(round(self.n * f))))


def tiny_ctx() -> Context:
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny import tiny_model

    model = tiny_model("llama-gqa")
    space = SubnetSpace.from_model(model, granularity=32)
    d = space.dims
    ids = torch.randint(0, model.config.vocab_size, (8, 16), generator=torch.Generator().manual_seed(0))
    return Context(model, None, space, Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate), cache={"ids": ids})


def test_multi_fidelity_screening_and_rescoring():
    ctx = tiny_ctx()
    sp = SearchProblem(ctx, [TinyPPL(), "params_ratio"], screen_fidelity=0.25)
    assert sp.search_columns == ["ppl@0.25", "params_ratio"]
    res = run_pymoo(sp, 16, pop_size=8, progress=False)
    t = res.table
    assert "ppl@0.25" in t and "ppl" in t
    full = t[t["fidelity"] >= 1]
    assert 0 < len(full) < len(t)  # only those near the front were re-scored
    # the full-fidelity value is the perplexity on all 8 rows, computed independently here
    row = full.iloc[0]
    from search_spaces import Subnet

    with ctx.masked(Subnet.from_json(row["subnet"])) as m:
        assert row["ppl"] == pytest.approx(perplexity(m, ctx.cache["ids"]), rel=1e-6)
        assert row["ppl@0.25"] == pytest.approx(perplexity(m, ctx.cache["ids"][:2]), rel=1e-6)
    assert (t.loc[t["pareto"], "fidelity"] >= 1).all()
    check_front(res)


class LogLoss(Loss):
    """:class:`Loss` + 1 on a log scale, screened at ``fidelity`` < 1 with a value off by a row-dependent factor
    (1.1-1.3, as SmolLM2's screens are 0.71-0.94 of their full values)."""

    name = "logloss"
    log_scale = True

    def __init__(self, factor: float | None = None):
        super().__init__()
        self.factor = factor

    def score(self, subnet, ctx):
        v = 1.0 + super().score(subnet, ctx)
        if self.factor is None:
            return v
        return v * (self.factor + 0.2 * (sum(c.neurons for c in subnet.layers) % 7) / 6)

    def at_fidelity(self, f):
        return self if f >= 1 else LogLoss(1.1)


def brute_outclassed(rows: list[dict], row: dict, margin: float) -> bool:
    """Independent of SearchProblem: some other feasible row no larger and ``margin`` x better at the screen."""
    return margin > 1 and any(o["key"] != row["key"] and o["feasible"] and o["params_ratio"] <= row["params_ratio"]
                              and o["logloss@0.5"] * margin <= row["logloss@0.5"] for o in rows)


@pytest.mark.parametrize("margin", [0.0, 1.5, 2.0])
def test_baselines_far_behind_at_the_screen_are_not_rescored(margin):
    """The loop re-scores the dense model and exactly the feasible baselines no other feasible row outclasses at the
    screen (brute force); a margin <= 1 re-scores every feasible baseline."""
    from nas_llm.search.loop import SearchLoop
    from nas_llm.search.pymoo_driver import PymooDriver

    sp = problem(objectives=[LogLoss(), "params_ratio"], screen_fidelity=0.5, constraints=["params_ratio in [0.3, 0.9]"])
    loop = SearchLoop(sp, 40, rescore_fronts=1, progress=False, rescore_baselines=True, baseline_margin=margin)
    loop.run(PymooDriver(pop_size=10, seed=0))
    rows = sp.rows()
    base = [r for r in rows if r["source"] == "uniform" or r["source"].startswith("baseline")]
    want = {r["key"] for r in base if r["feasible"] and not brute_outclassed(rows, r, margin)}
    got = {r["key"] for r in base if r["fidelity"] >= 1}
    assert got == want
    assert all(r["fidelity"] >= 1 for r in rows if r["source"] == "dense")
    skipped = {r["key"] for r in base if r["feasible"]} - want
    assert (len(skipped) > 0) == (margin > 1)  # the instance has baselines both ways
    for r in rows:  # the method agrees with the brute force on every row, not only on the baselines
        assert sp.outclassed(r, margin) == (r.get("logloss@0.5") is not None and brute_outclassed(rows, r, margin)), r["key"]


@pytest.mark.parametrize("margin", [0.0, 1.05, 3.0])
def test_allocation_seeds_near_the_best_screen_are_rescored(margin):
    """At the end the loop re-scores at full fidelity every feasible allocation seed that no other feasible row
    outclasses at the screen (brute force), and none when the margin is 0; other rows are left as the search left them."""
    from nas_llm.search.loop import SearchLoop
    from nas_llm.search.population import mutate
    from nas_llm.search.pymoo_driver import PymooDriver

    def run(m):
        sp = problem(objectives=[LogLoss(), "params_ratio"], screen_fidelity=0.5, constraints=["params_ratio in [0.3, 0.9]"])
        rng = np.random.default_rng(3)
        u = sp.space.uniform_at_ratio(0.6, "mlp")
        sp.extra_seeds = [(mutate(sp.space, u, rng, p=0.5), "alloc") for _ in range(6)]
        SearchLoop(sp, 40, rescore_fronts=0, progress=False, seed_margin=m).run(PymooDriver(pop_size=10, seed=0))
        return sp.rows()

    rows, off = run(margin), {r["key"]: r for r in run(0.0)}
    seeds = [r for r in rows if r["source"] == "alloc"]
    assert len(seeds) >= 4 and sum(r["feasible"] for r in seeds) >= 3
    want = set() if margin == 0 else {r["key"] for r in seeds if r["feasible"] and not brute_outclassed(rows, r, margin)}
    for r in rows:
        full = float(r["fidelity"]) >= 1
        if r["key"] in want:
            assert full, r["key"]
        else:  # exactly as the search without the rule left it
            assert full == (float(off[r["key"]]["fidelity"]) >= 1), r["key"]
    unpromoted = {k for k in want if float(off[k]["fidelity"]) < 1}
    if margin > 1:  # the instance exercises the rule: seeds promoted only by it
        assert unpromoted
    tight = {r["key"] for r in seeds if r["feasible"] and not brute_outclassed(rows, r, 1.05)}
    if margin == 1.05:  # and seeds it leaves at the screen
        assert len(want) < sum(r["feasible"] for r in seeds)
    if margin == 3.0:  # a wider margin re-scores more
        assert want > tight


# -- bad input: clear errors before any work ----------------------------------------------------------
def test_bad_input_errors_before_work():
    loss = Loss()
    with pytest.raises(ValueError, match="no objectives"):
        problem(objectives=[])
    with pytest.raises(KeyError, match="Did you mean 'params_ratio'"):
        problem(objectives=[loss, "params_ratoi"])
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        problem(objectives=[loss], constraints=["params_ratio in [0.5, 1.5]"])
    with pytest.raises(ValueError, match=r"outside \(0, 1\]"):
        problem(objectives=[loss], constraints=["params_ratio<=0"])
    sp = problem(objectives=[loss, "params_ratio"], constraints=["params<=100"])
    with pytest.raises(ValueError, match="no subnet can meet"):
        run_pymoo(sp, 10, pop_size=4, progress=False)
    assert loss.calls == 0 and sp.n_calls == 0
    with pytest.raises(ValueError, match="listed twice"):
        problem(objectives=["params_ratio", "params_ratio"])


def test_objective_shape_error_names_the_fix():
    with pytest.raises(ValueError, match="one column per objective"):
        check_objective_matrix(np.zeros((3, 1)), 3, 2)


def test_cli_rejects_bad_input_before_loading(tmp_path, capsys):
    from nas_llm.cli import main

    assert main(["search", "--out", str(tmp_path / "r"), "--objectives", " , "]) == 2
    assert "objectives" in capsys.readouterr().err
    assert main(["search", "--out", str(tmp_path / "r"), "--objectives", "params_ratoi,latency_lut"]) == 2
    assert "Did you mean" in capsys.readouterr().err
    assert main(["search", "--out", str(tmp_path / "r"), "--objectives", "params_ratio",
                 "--constraint", "params_ratio in [0, 2]"]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "r" / "run.json").exists()


def test_pareto_mask_used_by_result_matches_front_module():
    res = run_random(problem(), 20, batch=10, progress=False)
    t = res.table
    assert np.array_equal(t["pareto"].to_numpy(), pareto_mask(t[["loss", "params_ratio"]].to_numpy(), feasible=t["feasible"]))


def test_size_constrained_search_seeds_inside_the_band():
    """A params_ratio constraint moves the seeds into the band (and keeps the ceil-heads uniform seed)."""
    from nas_llm.search.population import ratios_within, seed_ratios, seeds
    from objectives import Constraint

    assert seed_ratios([Constraint.parse("latency_lut<=20")]) is None
    r = seed_ratios([Constraint.parse("params_ratio in [0.78, 0.82]"), Constraint.parse("params_ratio<=0.81")])
    assert r == (0.78, 0.795, 0.8, 0.81)
    assert ratios_within(None, 0.5) == (0.05, 0.275, 0.4, 0.5)
    with pytest.raises(ValueError, match="empty size band"):
        ratios_within(0.9, 0.8)
    ctx = make_ctx()
    sp = ctx.space
    got = {s.key() for s, _ in seeds(sp, ctx.ranking, (0.6,))}
    # hand-built: KV groups ceil(0.6 * 2) = 2 (all), MLP width whose size is nearest 0.6
    want = min((sp.uniform(2, n) for n in sp.neuron_choices), key=lambda s: abs(sp.ratio(s) - 0.6))
    assert want.key() in got
    in_band = [s for s, src in initial_population(sp, ctx.ranking, 12, ratios=r) if src == "uniform"]
    assert all(abs(sp.ratio(s) - 0.8) < 0.1 for s in in_band)


def test_search_cost_accounting():
    """Cache hits are counted and every objective's scoring time is attributed to it."""
    sp = problem(objectives=[Loss(sleep=0.02), "params_ratio"])
    s = sp.space.dense()
    sp.evaluate(s)
    sp.evaluate(s)
    assert sp.n_calls == 1 and sp.n_hits == 1
    assert set(sp.objective_s) == {"loss", "params_ratio"}
    assert sp.objective_s["loss"] >= 0.02 > sp.objective_s["params_ratio"]

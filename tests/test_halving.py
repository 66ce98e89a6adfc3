"""Successive halving: the rung ladder, the promotion rule (non-dominated rank, then crowding) against brute force,
and a search whose cheap fidelity lies: the front holds only full-fidelity values the search computed itself."""
from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from nas_llm.errors import ConfigError
from nas_llm.search import SearchProblem, run_pymoo
from nas_llm.search.halving import best_fraction, ladder, promotions
from objectives import Objective
from search_spaces import Subnet
from test_search import Loss, check_front, make_ctx


def test_ladder():
    assert ladder(0.125, 8) == [0.125, 1.0]
    assert ladder(0.125, 4) == [0.125, 0.5, 1.0]
    assert ladder(0.25, 2) == [0.25, 0.5, 1.0]
    assert ladder(None, 4) == [1.0] and ladder(1.0, 4) == [1.0]
    with pytest.raises(ConfigError, match="rung step >= 2"):
        ladder(0.25, 1)


def nds_ranks(F: np.ndarray) -> np.ndarray:
    """Non-dominated rank of every row by peeling fronts (brute force)."""
    left, rank, r = set(range(len(F))), np.zeros(len(F), dtype=int), 0
    while left:
        front = {i for i in left if not any(np.all(F[j] <= F[i]) and np.any(F[j] < F[i]) for j in left if j != i)}
        for i in front:
            rank[i] = r
        left -= front
        r += 1
    return rank


@pytest.mark.parametrize("seed", range(8))
def test_best_fraction_takes_whole_fronts_first(seed):
    rng = np.random.default_rng(seed)
    F = rng.integers(0, 6, (int(rng.integers(2, 25)), 2)).astype(float)
    k = int(rng.integers(1, len(F) + 1))
    got = best_fraction(F, k)
    assert len(got) == len(set(got)) == k
    rank = nds_ranks(F)
    worst_in = max(rank[i] for i in got)
    assert all(rank[i] >= worst_in for i in set(range(len(F))) - set(got))  # nothing better was left out


class Deceiver(Objective):
    """``Loss`` at full fidelity; below it, ``Loss`` plus a large pseudo-random error (a cheap fidelity that lies).

    Every call is recorded in ``calls`` as ``(subnet key, fidelity)``.
    """

    name = "loss"

    def __init__(self, fidelity: float = 1.0, calls: list | None = None):
        self.fidelity, self.calls, self.exact = fidelity, [] if calls is None else calls, Loss()

    def at_fidelity(self, f):
        return self if f >= 1 else Deceiver(f, self.calls)

    def score(self, subnet, ctx):
        self.calls.append((subnet.key(), self.fidelity))
        v = self.exact.score(subnet, ctx)
        if self.fidelity < 1:
            v += (zlib.crc32(f"{subnet.key()}@{self.fidelity}".encode()) % 1000) / 250.0
        return v


@pytest.mark.parametrize("eta,step", [(2, 0), (4, 2)])  # classic (step = eta) and the decoupled ladder
def test_front_holds_only_full_fidelity_values_it_computed(tmp_path, eta, step):
    calls: list = []
    sp = SearchProblem(make_ctx(), [Deceiver(calls=calls), "params_ratio"], ["params_ratio in [0.3, 0.9]"],
                       screen_fidelity=0.25, halving=eta, rung_step=step)
    assert sp.rungs == [0.25, 0.5, 1.0]
    res = run_pymoo(sp, 60, pop_size=12, run_dir=tmp_path, progress=False)
    t = res.table
    full_calls = {k for k, f in calls if f >= 1}
    front = t[t["pareto"]]
    assert len(front) and (front["fidelity"] >= 1).all()
    for _, row in front.iterrows():
        assert row["key"] in full_calls  # its full-fidelity value was computed by this search
        assert row["loss"] == Loss().score(Subnet.from_json(row["subnet"]), sp.ctx)
    # every rung column holds what the objective returned at that rung; lower rungs were not all promoted
    assert {"loss@0.25", "loss@0.5"} <= set(t.columns)
    assert (t["fidelity"] < 1).sum() > 0 and (t["fidelity"] == 0.5).sum() > 0
    low = t[t["fidelity"] < 1]
    assert not low["pareto"].any()
    assert (low["loss"] == low.apply(lambda r: r[f"loss@{r['fidelity']:g}"], axis=1)).all()
    check_front(res)
    # the journal has every promotion: a resumed search rebuilds the same table without scoring anything
    n = len(calls)
    sp2 = SearchProblem(make_ctx(), [Deceiver(calls=calls), "params_ratio"], ["params_ratio in [0.3, 0.9]"],
                        screen_fidelity=0.25, halving=eta, rung_step=step)
    res2 = run_pymoo(sp2, 60, pop_size=12, run_dir=tmp_path, resume=True, progress=False)
    assert len(calls) == n
    assert sorted(res2.table.loc[res2.table["pareto"], "id"]) == sorted(front["id"])


def test_promotions_pick_the_best_fraction_of_feasible_rows_at_the_rung():
    calls: list = []
    sp = SearchProblem(make_ctx(), [Deceiver(calls=calls), "params_ratio"], ["params_ratio in [0.3, 0.9]"],
                       screen_fidelity=0.25, halving=3)
    rng = np.random.default_rng(0)
    rows = [sp.evaluate(sp.space.sample(rng), "random") for _ in range(20)]
    feas = [r for r in rows if r["feasible"]]
    chosen = promotions(sp, rows, 0.25, 3)
    assert len(chosen) == math.ceil(len(feas) / 3)
    assert all(r["feasible"] for r in chosen)
    F = np.stack([sp.values_at(r, 0.25) for r in feas])
    rank = nds_ranks(F)
    worst = max(rank[feas.index(r)] for r in chosen)
    assert all(rank[i] >= worst for i, r in enumerate(feas) if r not in chosen)
    sp.promote(chosen, 1.0)
    assert all(r["fidelity"] == 1.0 and r["loss"] == Loss().score(Subnet.from_json(r["subnet"]), sp.ctx) for r in chosen)
    assert promotions(sp, sp.rows(), 0.25, 3) == []  # the best third is already up: nothing to promote twice


def test_rung_step_sets_the_ladder_and_eta_the_share():
    """``--rung-step`` decides the fidelities, ``--halving`` how many climb: with screen 1/8, step 4 and eta 8 the
    rungs are 1/8, 1/2, 1 and ceil(n / 8) of the rows at a rung move up (not ceil(n / 4))."""
    sp = SearchProblem(make_ctx(), [Deceiver(), "params_ratio"], ["params_ratio in [0.3, 0.9]"],
                       screen_fidelity=0.125, halving=8, rung_step=4)
    assert sp.rungs == [0.125, 0.5, 1.0]
    assert SearchProblem(make_ctx(), [Deceiver(), "params_ratio"], screen_fidelity=0.125, halving=8).rungs == [0.125, 1.0]
    rng = np.random.default_rng(1)
    rows = [sp.evaluate(sp.space.sample(rng), "random") for _ in range(30)]
    n = sum(r["feasible"] for r in rows)
    assert n > 8 and len(promotions(sp, rows, 0.125, sp.halving)) == math.ceil(n / 8)

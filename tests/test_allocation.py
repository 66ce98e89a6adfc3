"""Allocation seeds: the knapsack DP is the brute-force optimum; allocate() picks the best subnet of a tiny space
under its params budget; cost weightings; the seeds enter the first generation with their source tags."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from nas_llm.errors import ConfigError
from nas_llm.search.allocation import MAX_UNITS, CostTable, alloc_seeds, allocate, knapsack
from nas_llm.search.population import initial_population
from search_spaces import ModelDims, Ranking, Subnet, SubnetSpace

DIMS = ModelDims(num_layers=4, hidden=32, num_heads=6, num_kv_heads=3, head_dim=8, intermediate=96, vocab=64,
                 tied_embeddings=False)


def brute(costs, weights, budget, floor=None):
    best = None
    for combo in itertools.product(*[range(len(c)) for c in costs]):
        w = sum(weights[g][j] for g, j in enumerate(combo))
        if w > budget or (floor is not None and w < floor):
            continue
        v = sum(costs[g][j] for g, j in enumerate(combo))
        if best is None or v < best - 1e-12:
            best = v
    return best


@pytest.mark.parametrize("trial", range(60))
def test_knapsack_is_the_brute_force_optimum(trial):
    rng = np.random.default_rng(trial)
    costs = [list(rng.random(rng.integers(1, 5))) for _ in range(rng.integers(1, 6))]
    weights = [list(rng.integers(0, 9, len(c)) * int(rng.choice([1, 5]))) for c in costs]
    budgets = [int(b) for b in rng.integers(-3, sum(max(w) for w in weights) + 3, 4)]
    floor = int(rng.integers(0, 10)) if trial % 3 == 0 else None
    for b, pick in zip(budgets, knapsack(costs, weights, budgets, floor)):
        ref = brute(costs, weights, b, floor)
        if ref is None:
            assert pick is None
            continue
        assert pick is not None and len(pick) == len(costs)
        w = sum(weights[g][j] for g, j in enumerate(pick))
        assert w <= b and (floor is None or w >= floor)
        assert sum(costs[g][j] for g, j in enumerate(pick)) == pytest.approx(ref, abs=1e-12)


def test_knapsack_beyond_its_resolution_stays_within_budget(monkeypatch):
    """Weights too fine for the DP grid are rounded up: the answer may be suboptimal, never over budget."""
    import nas_llm.search.allocation as A

    monkeypatch.setattr(A, "MAX_UNITS", 10)
    rng = np.random.default_rng(0)
    costs = [list(rng.random(4)) for _ in range(5)]
    weights = [list(rng.integers(0, 1000, 4)) for _ in range(5)]
    for b in (500, 1500, 3000):
        pick = A.knapsack(costs, weights, [b])[0]
        assert pick is None or sum(weights[g][j] for g, j in enumerate(pick)) <= b


@pytest.mark.parametrize("seed", range(20))
def test_knapsack_beyond_its_resolution_meets_the_real_floor(monkeypatch, seed):
    """Rounded-up units can meet the floor in units while the real weight is below it: such picks are refused."""
    import nas_llm.search.allocation as A

    monkeypatch.setattr(A, "MAX_UNITS", 10)
    rng = np.random.default_rng(seed)
    costs = [list(rng.random(4)) for _ in range(5)]
    weights = [list(rng.integers(0, 1000, 4)) for _ in range(5)]
    total = sum(max(w) for w in weights)
    for b in (total // 2, 3 * total // 4, total):
        floor = b - total // 8
        pick = A.knapsack(costs, weights, [b], floor=floor)[0]
        if pick is not None:
            w = sum(weights[g][j] for g, j in enumerate(pick))
            assert floor <= w <= b
    assert MAX_UNITS > 10


def test_knapsack_rejects_bad_tables():
    with pytest.raises(ConfigError, match="as many costs as weights"):
        knapsack([[1.0, 2.0]], [[1]], [3])
    with pytest.raises(ConfigError, match="weights must be >= 0"):
        knapsack([[1.0]], [[-1]], [3])
    with pytest.raises(ConfigError, match="costs finite"):
        knapsack([[math.nan]], [[1]], [3])


def random_table(space: SubnetSpace, seed: int) -> CostTable:
    """Costs that fall as a layer keeps more (0 at the dense width), different per layer."""
    rng = np.random.default_rng(seed)
    d = space.dims
    attn = [sorted(rng.random(d.num_kv_heads - 1) * rng.random(), reverse=True) + [0.0] for _ in range(d.num_layers)]
    mlp = [sorted(rng.random(space.n_blocks - 1) * rng.random(), reverse=True) + [0.0] for _ in range(d.num_layers)]
    return CostTable(attn, mlp)


def all_subnets(space: SubnetSpace):
    d = space.dims
    per_layer = [(g, n) for g in range(1, d.num_kv_heads + 1) for n in space.neuron_choices]
    for combo in itertools.product(per_layer, repeat=d.num_layers):
        yield Subnet.from_lists([g for g, _ in combo], [n for _, n in combo])


def table_cost(space, table, s):
    return sum(table.attn[i][c.kv_groups - 1] + table.mlp[i][space.neuron_choices.index(c.neurons)]
               for i, c in enumerate(s.layers))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_allocate_is_the_best_subnet_of_the_space_under_the_budget(seed):
    space = SubnetSpace(DIMS, granularity=32)  # 3 KV groups x 3 widths per layer: 9^4 subnets
    table = random_table(space, seed)
    subnets = list(all_subnets(space))
    dense = space.params(space.dense())
    ratios = (0.55, 0.7, 0.85)
    picks = allocate(space, table, [int(r * dense) for r in ratios], floor=int(0.5 * dense))
    for r, pick in zip(ratios, picks):
        ok = [s for s in subnets if int(0.5 * dense) <= space.params(s) <= int(r * dense)]
        ref = min(table_cost(space, table, s) for s in ok)
        assert space.params(pick) <= int(r * dense) and space.params(pick) >= int(0.5 * dense)
        assert table_cost(space, table, pick) == pytest.approx(ref, abs=1e-12)
    assert allocate(space, table, [int(0.01 * dense)]) == [None]  # below the smallest subnet


def test_weightings_never_cut_heads_at_infinite_attention_cost():
    space = SubnetSpace(DIMS, granularity=32)
    table = random_table(space, 3)
    dense = space.params(space.dense())
    s = allocate(space, table.weighted(attn=math.inf), [int(0.7 * dense)])[0]
    assert all(c.kv_groups == DIMS.num_kv_heads for c in s.layers)
    flat = table.weighted(blend=1.0)  # every layer like the median layer: the uniform allocation
    assert all(row == flat.mlp[0] for row in flat.mlp) and flat.mlp[0][-1] == 0.0
    half = table.weighted(blend=0.5)
    med = float(np.median([row[0] for row in table.mlp]))
    assert half.mlp[1][0] == pytest.approx(0.5 * table.mlp[1][0] + 0.5 * med)
    forbidden = CostTable(table.attn, [[math.inf] + row[1:] for row in table.mlp])
    s = allocate(space, forbidden, [int(0.3 * space.params(space.dense()))])[0]
    assert s is None or all(c.neurons != space.neuron_choices[0] for c in s.layers)
    with pytest.raises(ConfigError, match="cost table layer 0"):
        CostTable([[0.0]] * 4, table.mlp).check(space)


def test_alloc_seeds_enter_the_first_generation_with_their_tags():
    space = SubnetSpace(DIMS, granularity=32)
    table = random_table(space, 4)
    made = alloc_seeds(space, table, [0.6, 0.75, 0.9], floor=0.55)
    assert made and len({s.key() for s, _ in made}) == len(made)
    assert all(0.55 <= space.ratio(s) <= info["ratio"] + 1e-9 for s, info in made)
    assert {info["weighting"] for _, info in made} <= {"joint", "flat25", "flat", "flat75"}
    rank = Ranking.identity(DIMS.num_layers, DIMS.num_kv_heads, DIMS.intermediate)
    pop = initial_population(space, rank, 4, seed=0, ratios=(0.7,), extra=[(s, "alloc") for s, _ in made])
    tags = [src for _, src in pop]
    keys = [s.key() for s, _ in pop]
    assert len(set(keys)) == len(keys)
    new = [s for s, _ in made if s.key() not in {k for k, t in zip(keys, tags) if t != "alloc"}]
    assert tags.count("alloc") == len(new) and tags.count("alloc-mut") >= 1

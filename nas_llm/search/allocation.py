"""Where the cut goes: the allocation of widths over layers that minimises a summed per-layer cost under a budget.

SPDY, OWL and ZipLM get their gains from *where* a model is cut, not from which channel. Given a cost
per layer and width (``nas_llm.search.sensitivity`` measures one: the loss increase with only that
layer cut), the best allocation under an additive cost model is a multiple-choice knapsack, solved
here exactly by dynamic programming over the (integer) budget. Attention and MLP of a layer are
separate groups: their costs and parameter counts add, so the optimum is the same as over the joint
per-layer choices, at a fraction of the work.

Pure (numpy only): :func:`knapsack` is the solver, :func:`allocate` turns a cost table into subnets.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import reduce
from typing import Sequence

import numpy as np

from nas_llm.errors import ConfigError
from search_spaces import Subnet, SubnetSpace

MAX_UNITS = 200_000  # budget resolution of the DP; weights are rounded up (never over budget) beyond it


def knapsack(costs: Sequence[Sequence[float]], weights: Sequence[Sequence[int]], budgets: Sequence[int],
             floor: int | None = None) -> list[list[int] | None]:
    """For each budget: one option index per group minimising the summed cost with ``floor <= summed weight <= budget``.

    ``costs[g][j]``/``weights[g][j]``: cost and integer weight (>= 0) of option ``j`` of group ``g``.
    None where no choice fits the budget. Exact when the weights, less each group's lightest option,
    need at most :data:`MAX_UNITS` units of their greatest common divisor; otherwise weights are
    rounded *up* to ``ceil(total / MAX_UNITS)``-sized units (the answer stays within budget).
    """
    if len(costs) != len(weights) or any(len(c) != len(w) or not len(c) for c, w in zip(costs, weights)):
        raise ConfigError("knapsack: every group needs as many costs as weights, and at least one option")
    w = [np.asarray(g, dtype=np.int64) for g in weights]
    c = [np.asarray(g, dtype=np.float64) for g in costs]
    if any((g < 0).any() for g in w) or any(not np.isfinite(g).all() for g in c):
        raise ConfigError("knapsack: weights must be >= 0 and costs finite")
    base = int(sum(int(g.min()) for g in w))
    extra = [g - g.min() for g in w]
    unit = reduce(math.gcd, [int(v) for g in extra for v in g if v], 0) or 1
    span = sum(int(g.max()) for g in extra)
    if span // unit > MAX_UNITS:
        unit = -(-span // MAX_UNITS)
    units = [-(-g // unit) for g in extra]  # ceil: a rounded weight is never lighter than the real one
    cap = int(sum(int(g.max()) for g in units))
    best, choice = _forward(c, units, cap)
    out: list[list[int] | None] = []
    for b in budgets:
        room = (int(b) - base) // unit if int(b) >= base else -1
        if room < 0:
            out.append(None)
            continue
        room = min(room, cap)
        low = 0 if floor is None else max(0, -(-(int(floor) - base) // unit))
        if low > room:
            out.append(None)
            continue
        out.append(_cheapest_above(best, choice, units, w, low, room, floor))
    return out


def _cheapest_above(best: np.ndarray, choice: list[np.ndarray], units: list[np.ndarray], w: list[np.ndarray],
                    low: int, room: int, floor: float | None) -> list[int] | None:
    """The cheapest choice ending in ``[low, room]`` units whose *real* weight meets ``floor``: with rounded-up
    units, meeting ``low`` in units does not guarantee the real floor, so ends are tried cheapest first."""
    ends = low + np.argsort(best[low : room + 1], kind="stable")
    for end in ends.tolist():
        if not np.isfinite(best[end]):
            return None
        pick = _backtrack(choice, units, end)
        if floor is None or sum(int(g[j]) for g, j in zip(w, pick)) >= floor:
            return pick
    return None


def _forward(c: list[np.ndarray], units: list[np.ndarray], cap: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``best[u]``: least cost of a choice in every group with total units exactly ``u``; the choice per group."""
    best = np.full(cap + 1, np.inf)
    best[0] = 0.0
    choice = []
    for cg, ug in zip(c, units):
        new = np.full(cap + 1, np.inf)
        arg = np.full(cap + 1, -1, dtype=np.int32)
        for j in np.argsort(ug, kind="stable"):  # ties: the lighter, then the earlier option wins
            u = int(ug[j])
            cand = np.full(cap + 1, np.inf)
            cand[u:] = best[: cap + 1 - u] + cg[j]
            better = cand < new
            new[better], arg[better] = cand[better], j
        best = new
        choice.append(arg)
    return best, choice


def _backtrack(choice: list[np.ndarray], units: list[np.ndarray], end: int) -> list[int]:
    picks = []
    for arg, ug in zip(reversed(choice), reversed(units)):
        j = int(arg[end])
        picks.append(j)
        end -= int(ug[j])
    return picks[::-1]


@dataclass
class CostTable:
    """Cost of each layer's choices: ``attn[i][g - 1]`` for ``g`` kept KV groups, ``mlp[i][k]`` for
    ``space.neuron_choices[k]`` neurons (0 for the dense width; e.g. a log-perplexity increase; ``inf``:
    not allowed, e.g. cut deeper than measured)."""

    attn: list[list[float]]
    mlp: list[list[float]]

    def check(self, space: SubnetSpace) -> "CostTable":
        d = space.dims
        if len(self.attn) != d.num_layers or len(self.mlp) != d.num_layers:
            raise ConfigError(f"cost table has {len(self.attn)}/{len(self.mlp)} layers, the space {d.num_layers}")
        for i, (a, m) in enumerate(zip(self.attn, self.mlp)):
            if len(a) != d.num_kv_heads or len(m) != space.n_blocks:
                raise ConfigError(f"cost table layer {i}: {len(a)} KV-group and {len(m)} width costs, expected "
                                  f"{d.num_kv_heads} and {space.n_blocks}")
        return self

    def weighted(self, attn: float = 1.0, blend: float = 0.0) -> "CostTable":
        """Attention costs scaled by ``attn`` (``inf``: never cut heads); every layer's costs blended by ``blend``
        towards the median layer's at the same width (1: all layers alike, i.e. a uniform allocation; for when
        the measurement is noisy). A dense choice keeps cost 0, a forbidden one (``inf``) stays forbidden."""
        def mix(rows: list[list[float]], scale: float) -> list[list[float]]:
            med = [float(np.median(col)) for col in zip(*rows)]
            out = []
            for row in rows:
                new = [(1 - blend) * v + blend * m if math.isfinite(v) else v for v, m in zip(row, med)]
                out.append([v * scale if v > 0 else v for v in new[:-1]] + [0.0])
            return out
        return CostTable(mix(self.attn, attn), mix(self.mlp, 1.0))


def _groups(space: SubnetSpace, table: CostTable) -> tuple[list, list, list, int]:
    """Knapsack groups: per layer, attention (finite-cost KV-group counts) then MLP (finite-cost neuron counts).

    ``layer_params(g, n) = A(g) + M(n) + const``, so each group is weighted by its params above the
    layer's smallest choice; returns costs, weights, the option values and the params of the smallest subnet.
    """
    d, widths = space.dims, space.neuron_choices
    g0, n0 = 1, widths[0]
    floor = space.layer_params(g0, n0)
    costs, weights, values = [], [], []
    for i in range(d.num_layers):
        kvs = [g for g, v in zip(range(1, d.num_kv_heads + 1), table.attn[i]) if math.isfinite(v)]
        ns = [n for n, v in zip(widths, table.mlp[i]) if math.isfinite(v)]
        costs += [[table.attn[i][g - 1] for g in kvs], [table.mlp[i][widths.index(n)] for n in ns]]
        weights += [[space.layer_params(g, n0) - floor for g in kvs], [space.layer_params(g0, n) - floor for n in ns]]
        values += [kvs, ns]
    return costs, weights, values, floor * d.num_layers


def allocate(space: SubnetSpace, table: CostTable, budgets: Sequence[int], floor: int | None = None) -> list[Subnet | None]:
    """The subnets with the least summed cost and at most ``budgets[b]`` (at least ``floor``) decoder params
    (None: nothing fits).

    Every layer is kept (layer drops are the search's business); KV groups and neuron counts are the
    space's own choices, priced with :meth:`SubnetSpace.layer_params`; other fields of a layer's choice
    stay as in the dense subnet.
    """
    table.check(space)
    costs, weights, values, base = _groups(space, table)
    dense = space.dense().layers
    out: list[Subnet | None] = []
    for p in knapsack(costs, weights, [int(b) - base for b in budgets], None if floor is None else int(floor) - base):
        if p is None:
            out.append(None)
            continue
        layers = [replace(dense[i], kv_groups=values[2 * i][p[2 * i]], neurons=values[2 * i + 1][p[2 * i + 1]])
                  for i in range(len(dense))]
        out.append(space.validate(Subnet(tuple(layers))))
    return out


# (name, attention cost scale, blend towards the median layer): as measured; then heads kept whole and every
# layer's costs a quarter, half and three quarters of the way to the median layer's (allocations between the
# measured one and uniform). Why these: the half-way seed was the pick of 8 of 10 band searches, and on the 70 / 80 %
# bands the best of the three blends beat it (benchmarks/RESULTS.md, 'Sensitivity metric'); heads kept whole with
# no blend ("mlp") was never the best seed there.
WEIGHTINGS: tuple[tuple[str, float, float], ...] = (("joint", 1.0, 0.0), ("flat25", math.inf, 0.25), ("flat", math.inf, 0.5),
                                                    ("flat75", math.inf, 0.75))


def alloc_seeds(space: SubnetSpace, table: CostTable, ratios: Sequence[float], floor: float | None = None,
                weightings: Sequence[tuple[str, float, float]] = WEIGHTINGS) -> list[tuple[Subnet, dict]]:
    """The allocations at each decoder-params ratio (and at least ``floor``) and cost weighting, deduplicated,
    with what made each."""
    dense = space.params(space.dense())
    budgets = [int(r * dense) for r in ratios]
    low = None if floor is None else math.ceil(floor * dense)
    out: list[tuple[Subnet, dict]] = []
    seen: set[str] = set()
    for name, attn, blend in weightings:
        for r, s in zip(ratios, allocate(space, table.weighted(attn, blend), budgets, low)):
            if s is not None and s.key() not in seen:
                seen.add(s.key())
                out.append((s, {"ratio": round(float(r), 4), "weighting": name, "params_ratio": round(space.ratio(s), 4)}))
    return out


__all__ = ["knapsack", "allocate", "alloc_seeds", "CostTable", "MAX_UNITS", "WEIGHTINGS"]

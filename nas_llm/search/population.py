"""The first generation: importance-initialised, not uniform random (the paper's item 2).

Seeds are the dense model, importance-ranked uniform subnets at several target sizes (MLP only
and MLP+attention), variants that also drop the lowest-Block-Influence layers, and simple
baselines (drop the last layers); the rest are small mutations of the seeds. Every member
carries a ``source`` tag that ends up in the run table, so baselines can be found later.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from nas_llm.errors import ConfigError
from search_spaces import Ranking, Subnet, SubnetSpace

from ..baselines import uniform_subnet

# Cover the whole useful range: without reformation subnets below ~0.6 degrade fast, but reformation
# recovers them (SmolLM2 uniform MLP 50%: test ppl 7284 -> 69), and a first generation that starts at 0.6
# leaves the low-latency end of the front to chance.
DEFAULT_RATIOS = (0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def drop_least_influential(subnet: Subnet, ranking: Ranking, n_drop: int) -> Subnet:
    """``subnet`` with its ``n_drop`` lowest-Block-Influence kept layers dropped (last layers without scores)."""
    kept = subnet.kept_layers
    if n_drop <= 0 or n_drop >= len(kept):
        return subnet
    if ranking.layer_scores is not None:
        order = sorted(kept, key=lambda i: (float(ranking.layer_scores[i]), -i))
    else:
        order = sorted(kept, reverse=True)
    drop = set(order[:n_drop])
    return Subnet(tuple(replace(c, keep=c.keep and i not in drop) for i, c in enumerate(subnet.layers)))


def mutate(space: SubnetSpace, subnet: Subnet, rng: np.random.Generator, p: float = 0.2, p_flip: float = 0.03) -> Subnet:
    """Each layer with probability ``p``: +-1 KV group, +-1 query head per group (when the space has them)
    and/or +-1..2 neuron blocks; keep flips with ``p_flip``."""
    d, choices = space.dims, space.neuron_choices
    layers = []
    for c in subnet.layers:
        kv, nb, keep = c.kv_groups, choices.index(c.neurons), c.keep
        q = c.heads_per_group or d.q_per_group
        if rng.random() < p:
            kv = int(np.clip(kv + rng.choice([-1, 1]), 1, d.num_kv_heads))
        if space.searches_heads and rng.random() < p:
            q = int(np.clip(q + rng.choice([-1, 1]), 1, d.q_per_group))
        if rng.random() < p:
            nb = int(np.clip(nb + rng.choice([-2, -1, 1, 2]), 0, len(choices) - 1))
        if space.allow_layer_drop and rng.random() < p_flip:
            keep = not keep
        layers.append(space.choice(kv, choices[nb], keep, q))
    if not any(c.keep for c in layers):
        layers[0] = replace(layers[0], keep=True)
    return Subnet(tuple(layers))


def seeds(space: SubnetSpace, ranking: Ranking, ratios: Sequence[float] = DEFAULT_RATIOS) -> list[tuple[Subnet, str]]:
    """The deterministic seeds, deduplicated, dense first."""
    out: list[tuple[Subnet, str]] = [(space.dense(), "dense")]
    L = space.num_layers
    for r in ratios:
        out.append((space.uniform_at_ratio(r, "mlp"), "uniform"))
        out.append((space.uniform_at_ratio(r, "both"), "uniform"))
        # attention cut no harder than the ratio, the MLP takes the rest: the uniform Wanda-sp baseline's
        # rule, the stronger uniform subnet when there are few KV groups
        out.append((uniform_subnet(space, r, "ceil"), "uniform"))
        if space.allow_layer_drop and L > 2:
            # drop low-influence layers and keep the rest wider, landing near the same size
            n_drop = max(1, int(round((1 - r) * L / 2)))
            base = space.uniform_at_ratio(min(1.0, r + n_drop / L), "mlp")
            out.append((drop_least_influential(base, ranking, n_drop), "init"))
            out.append((space.uniform_at_ratio(r, "layers"), "baseline:drop_last"))
    seen: set[str] = set()
    uniq = []
    for s, src in out:
        if s.key() not in seen:
            seen.add(s.key())
            uniq.append((s, src))
    return uniq


def ratios_within(lo: float | None, hi: float | None, ratios: Sequence[float] = DEFAULT_RATIOS) -> tuple[float, ...]:
    """Seed sizes for a size-constrained search: the default sizes inside [lo, hi] plus both ends and
    the middle, so the first generation starts feasible instead of spending its budget outside the band."""
    lo = 0.05 if lo is None else max(lo, 0.05)
    hi = 1.0 if hi is None else min(hi, 1.0)
    if lo > hi:
        raise ConfigError(f"empty size band [{lo}, {hi}]")
    return tuple(sorted({*(r for r in ratios if lo <= r <= hi), lo, (lo + hi) / 2, hi}))


def seed_ratios(constraints) -> tuple[float, ...] | None:
    """Seed sizes from the params_ratio constraints (None when there are none): a search asked for
    80% models should start from importance-ranked 80% models."""
    bands = [c for c in constraints if c.objective == "params_ratio"]
    if not bands:
        return None
    lo = max((c.lo for c in bands if c.lo is not None), default=None)
    hi = min((c.hi for c in bands if c.hi is not None), default=None)
    return ratios_within(lo, hi)


def initial_population(space: SubnetSpace, ranking: Ranking, size: int, seed: int = 0,
                       ratios: Sequence[float] = DEFAULT_RATIOS, random_fraction: float = 0.0,
                       extra: Sequence[tuple[Subnet, str]] = ()) -> list[tuple[Subnet, str]]:
    """``size`` distinct subnets: the seeds (all of them, even beyond ``size``), the ``extra`` seeds (e.g.
    allocation seeds, tag ``alloc``) and half as many mutations of them (tag ``alloc-mut``), then mutations
    of all seeds (and a ``random_fraction`` of uniform random subnets for diversity)."""
    if size < 1:
        raise ConfigError(f"population size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    pop = seeds(space, ranking, ratios)
    seen = {s.key() for s, _ in pop}
    added = [(s, src) for s, src in extra if s.key() not in seen and not seen.add(s.key())]
    pop += added
    tries, n_mut = 0, len(pop) + (len(added) + 1) // 2
    while added and len(pop) < n_mut and tries < 100 * n_mut:
        tries += 1
        parent, src = added[int(rng.integers(len(added)))]
        s = mutate(space, parent, rng)
        if s.key() not in seen:
            seen.add(s.key())
            pop.append((s, f"{src}-mut"))
    n_random = int(round(random_fraction * max(0, size - len(pop))))
    tries = 0
    base = [s for s, _ in pop]
    while len(pop) < size - n_random and tries < 100 * size:
        tries += 1
        s = mutate(space, base[int(rng.integers(len(base)))], rng)
        if s.key() not in seen:
            seen.add(s.key())
            pop.append((s, "init"))
    while len(pop) < size and tries < 200 * size:
        tries += 1
        s = space.sample(rng, p_drop=0.1)
        if s.key() not in seen:
            seen.add(s.key())
            pop.append((s, "random"))
    return pop

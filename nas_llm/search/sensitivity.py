"""What cutting one layer costs: measured once per model and settings, cached in ``RUN/sensitivity.json`` and in a
shared folder (``$NAS_LLM_CACHE/sensitivity``) that the other seeds and runs of the same settings reuse; priced per width.

For every layer and a few widths (``points`` MLP widths and KV-group counts, evenly spaced in the cut
fraction up to ``max_cut``) the search's perplexity objective scores the dense model with *only that
layer* cut, on a few short windows of its own text (``n_samples x seq_len``; prefix reuse makes a late
layer cheap). The cost is the mean per-token KL divergence of the cut model's next-token distribution
from the dense model's (``metric="kl"``) or the increase of log perplexity (``"nll"``). Between the
measured widths the cost follows the layer's own refit error (``PrefixFactor.errors``: exact for every
width from one product), so a couple of forwards per layer price all of its widths; an objective without a refit interpolates in the
cut fraction instead. Cuts deeper than measured are not priced (cost ``inf``): extrapolating one noisy
measurement sent whole layers to a single neuron block. :func:`nas_llm.search.allocation.allocate`
turns the table into subnets.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from nas_llm.errors import ConfigError
from nas_llm.model.atomic import atomic_write_json
from search_spaces import Subnet, SubnetSpace
from search_spaces.plan import head_channels

from .allocation import CostTable

SENSITIVITY_FILE = "sensitivity.json"
SENS_METRICS = ("kl", "nll")  # what a single-layer cut costs: see measure()


@dataclass
class Sensitivity:
    """Measured single-layer costs (``[layer][point]``) and per-width error curves (``[layer][choice]``)."""

    settings: dict[str, Any]
    mlp_widths: list[int]
    kv_counts: list[int]
    mlp_cost: list[list[float]]
    attn_cost: list[list[float]]
    mlp_error: list[list[float]]  # per space.neuron_choices, 0 at the dense width
    attn_error: list[list[float]]  # per KV-group count 1..G, 0 at G
    seconds: float = 0.0
    source: str = field(default="measured", compare=False)  # where this copy came from: measured / run / cache

    def table(self, space: SubnetSpace) -> CostTable:
        """Cost of every choice of every layer (interpolated along the error curves; ``inf`` beyond the deepest cut measured)."""
        widths, G = space.neuron_choices, space.dims.num_kv_heads
        mlp = _price(self.mlp_cost, [[self.mlp_error[i][widths.index(w)] for w in self.mlp_widths]
                                     for i in range(len(self.mlp_cost))], self.mlp_error)
        if G > 1:
            attn = _price(self.attn_cost, [[self.attn_error[i][g - 1] for g in self.kv_counts]
                                           for i in range(len(self.attn_cost))], self.attn_error)
        else:
            attn = [[0.0] for _ in self.mlp_cost]
        return CostTable(attn, mlp).check(space)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("source")
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Sensitivity":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def _price(cost: list[list[float]], at: list[list[float]], curve: list[list[float]]) -> list[list[float]]:
    """Per layer: measured ``cost`` at errors ``at``, interpolated at every error of ``curve`` (0 cost at 0 error;
    ``inf`` beyond the largest measured error).

    Costs are made non-decreasing in the error and floored at 1% of the median positive measurement,
    so a noisy measurement never makes a cut look free.
    """
    pos = [c for row in cost for c in row if c > 0]
    floor = 0.01 * float(np.median(pos)) if pos else 1e-6
    out = []
    for c, x, xs in zip(cost, at, curve):
        order = np.argsort(x)
        x_m = np.asarray(x, dtype=float)[order]
        y_m = np.maximum.accumulate(np.maximum(np.asarray(c, dtype=float)[order], floor))
        X, Y = np.concatenate([[0.0], x_m]), np.concatenate([[0.0], y_m])
        xs = np.asarray(xs, dtype=float)
        y = np.where(xs <= X[-1] * (1 + 1e-9), np.interp(xs, X, Y), np.inf)
        out.append([float(v) for v in y])
    return out


def probe_points(space: SubnetSpace, points: int, max_cut: float = 0.5) -> tuple[list[int], list[int]]:
    """The measured widths and KV-group counts: ``points`` cut fractions evenly spaced in (0, ``max_cut``]."""
    if points < 1:
        raise ConfigError(f"sensitivity points must be >= 1, got {points}")
    if not 0 < max_cut < 1:
        raise ConfigError(f"the deepest measured cut must be a fraction in (0, 1), got {max_cut}")
    widths, G = space.neuron_choices, space.dims.num_kv_heads
    fr = [max_cut * j / points for j in range(1, points + 1)]
    mlp = sorted({min(widths[:-1], key=lambda w: abs(w - widths[-1] * (1 - f))) for f in fr}, reverse=True) \
        if len(widths) > 1 else []
    kv = sorted({int(min(G - 1, max(1, round(G * (1 - f))))) for f in fr}, reverse=True) if G > 1 else []
    return mlp, kv


def _one_layer(space: SubnetSpace, i: int, **change: int) -> Subnet:
    dense = space.dense().layers
    return Subnet(tuple(replace(c, **change) if j == i else c for j, c in enumerate(dense)))


def error_curves(objective: Any, ctx: Any) -> tuple[list[list[float]], list[list[float]]]:
    """Per layer, the refit error of every width and KV-group count (the objective's ``factors``), or the
    cut fraction when it has none."""
    space = ctx.space
    d, widths = space.dims, space.neuron_choices
    if not hasattr(objective, "factors"):
        return ([[1 - w / widths[-1] for w in widths] for _ in range(d.num_layers)],
                [[1 - g / d.num_kv_heads for g in range(1, d.num_kv_heads + 1)] for _ in range(d.num_layers)])
    from objectives.reformed import refit_map

    f = objective.factors(ctx)
    per_group = len(head_channels([0], d))
    mlp, attn = [], []
    for i in range(d.num_layers):
        mlp.append(f[(i, "down")].errors(refit_map(ctx.model, i, "down").weight, list(widths)))
        attn.append(f[(i, "o")].errors(refit_map(ctx.model, i, "o").weight, [g * per_group for g in range(1, d.num_kv_heads + 1)]))
    return mlp, attn


def measure(objective: Any, ctx: Any, points: int = 2, settings: dict | None = None, max_cut: float = 0.5,
            metric: str = "kl") -> Sensitivity:
    """Score every single-layer cut of :func:`probe_points` with ``objective`` (already on its probe windows).

    ``metric``: ``kl`` -- the mean per-token ``KL(dense || cut)`` (``objective.divergence``); ``nll`` -- the
    increase of log perplexity. Both are nats per token (the first is the expectation of the second), but
    on a few short windows the NLL change is as noisy as the smaller costs it should rank (it even comes
    out negative), and allocations from it scored worse (benchmarks/RESULTS.md, 'Sensitivity metric').
    """
    from tqdm.auto import tqdm

    if metric not in SENS_METRICS:
        raise ConfigError(f"sensitivity metric {metric!r} is not one of {', '.join(SENS_METRICS)}")
    space = ctx.space
    t0 = time.perf_counter()
    objective.setup(ctx)
    if metric == "kl":
        def cost_of(s: Subnet) -> float:
            return objective.divergence(s, ctx)
    else:
        base = math.log(objective.score(space.dense(), ctx))

        def cost_of(s: Subnet) -> float:
            return math.log(objective.score(s, ctx)) - base
    widths, kvs = probe_points(space, points, max_cut)
    L = space.num_layers
    jobs = [(i, "neurons", w) for i in range(L) for w in widths] + [(i, "kv_groups", g) for i in range(L) for g in kvs]
    cost: dict[tuple[int, str, int], float] = {}
    for i, what, v in tqdm(jobs, desc="layer sensitivity", disable=not ctx.progress, leave=False):
        cost[(i, what, v)] = cost_of(_one_layer(space, i, **{what: v}))
    mlp_err, attn_err = error_curves(objective, ctx)
    return Sensitivity(settings or {}, widths, kvs, [[cost[(i, "neurons", w)] for w in widths] for i in range(L)],
                       [[cost[(i, "kv_groups", g)] for g in kvs] for i in range(L)], mlp_err, attn_err,
                       round(time.perf_counter() - t0, 2))


def _read(path: Path, settings: dict, source: str) -> Sensitivity | None:
    """The table at ``path`` when it was measured with exactly ``settings``; None when absent, unreadable or other."""
    if not path.is_file():
        return None
    try:
        old = Sensitivity.from_json(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError):
        return None
    return replace(old, source=source) if old.settings == json.loads(json.dumps(settings)) else None


def shared_path(cache: str | Path, settings: dict, extra: dict | None = None) -> Path:
    """Where the shared cache keeps the table of ``settings`` (a hash of their canonical JSON and of ``extra``:
    what a longer-lived cache must also tell apart, e.g. the contents of the text files behind source names)."""
    key = hashlib.sha256(json.dumps([settings, extra or {}], sort_keys=True, default=str).encode()).hexdigest()[:24]
    return Path(cache) / f"sensitivity-{key}.json"


def load_or_measure(run_dir: str | Path | None, objective: Any, ctx: Any, points: int, settings: dict,
                    max_cut: float = 0.5, cache: str | Path | None = None, cache_extra: dict | None = None,
                    metric: str = "kl") -> Sensitivity:
    """The run folder's table when it was measured with ``settings``; else the shared ``cache`` folder's (the table
    depends on the model, the probe windows and ``settings``, not on the search seed, so a second seed or a rerun
    skips the measurement); else measure. Whatever was missing is written (atomic); ``.source`` says which it was.
    ``cache_extra``: more key for the shared copy only (see :func:`shared_path`). ``metric`` joins ``settings``
    (except ``nll``, so tables measured before the metric existed keep their key and are reused)."""
    if metric != "nll":
        settings = {**settings, "metric": metric}
    path = None if run_dir is None else Path(run_dir) / SENSITIVITY_FILE
    shared = None if cache is None else shared_path(cache, settings, cache_extra)
    sens = (_read(path, settings, "run") if path is not None else None) or \
           (_read(shared, settings, "cache") if shared is not None else None) or \
           measure(objective, ctx, points, settings, max_cut, metric)
    for where, src in ((path, "run"), (shared, "cache")):
        if where is not None and sens.source != src and _read(where, settings, src) is None:
            try:
                atomic_write_json(where, sens.to_json())
            except OSError as e:
                if where == path:
                    raise
                warnings.warn(f"could not write the shared sensitivity cache {where} ({e}); the run folder keeps its copy",
                              stacklevel=2)
    return sens


__all__ = ["Sensitivity", "SENSITIVITY_FILE", "SENS_METRICS", "measure", "load_or_measure", "shared_path", "probe_points", "error_curves"]

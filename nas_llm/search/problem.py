"""The search problem, declared once: space + objectives + constraints + a caching evaluator.

Every driver (pymoo, Optuna, random) goes through :meth:`SearchProblem.evaluate`; it scores a
subnet at most once per run (cache keyed by ``Subnet.key()``), appends every finished evaluation
to a :class:`~nas_llm.search.journal.Journal` (so a killed run loses nothing), and returns a plain
dict row of the run table (columns in ``nas_llm.run``). Rows scored elsewhere (a journal being
resumed, other workers of a shared study) enter the cache through :meth:`restore` only.

A candidate whose objective returns NaN or infinity is recorded as failed (``reason`` column,
infeasible, worst values for the optimiser) instead of aborting the search.

Multi-fidelity: when ``screen_fidelity`` is set, objectives whose ``at_fidelity(f)`` differs
from themselves are first scored cheaply (column ``NAME@f``, which the optimiser sees);
:meth:`promote` scores rows at a higher rung (``NAME@f2``; full fidelity: column ``NAME``), either for
points near the front (:meth:`rescore`) or by successive halving (``halving=eta``,
:mod:`nas_llm.search.halving`). Column ``NAME`` always holds the highest fidelity measured, ``fidelity`` which.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from nas_llm.errors import ConfigError
from objectives import Constraint, Context, Objective, checked_score, describe_objective, get_objective
from objectives.base import finite_float
from search_spaces import Subnet, SubnetError

from .journal import Journal

# objective kinds that grow with the subnet: their extremes sit at the smallest subnet and the dense model
PRECHECKED_KINDS = ("size", "latency")


# what the optimiser sees for a failed candidate: worse than any real score, yet finite (crowding distances
# and hypervolumes stay defined)
FAILED = 1e30


class CandidateFailed(Exception):
    """An objective returned NaN or infinity for one candidate: that candidate fails, the search goes on."""


def _fmt_fid(f: float) -> str:
    return f"{f:g}"


def _missing(v: Any) -> bool:
    """A value not measured: absent, None (a journal's NaN) or NaN."""
    try:
        return v is None or math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def _non_finite(v: Any) -> bool:
    try:
        return not math.isfinite(float(v))
    except (TypeError, ValueError):
        return False  # not a number at all: finite_float names the objective and the fix


class SearchProblem:
    """What to optimise. Build it once, hand it to a driver.

    ``objectives``: registered names, import paths or :class:`Objective` instances (>= 1).
    ``constraints``: ``Constraint`` or text like ``"params_ratio in [0.5, 0.8]"``, ``"latency_lut<=20"``.
    ``screen_fidelity``: e.g. 0.25 to screen every candidate with a quarter of the calibration budget.
    Objectives with the ``log_scale`` trait are seen by the optimiser on a log scale (dominance is unchanged;
    crowding distances stop being swamped by perplexities of 1e10 from broken subnets).
    """

    def __init__(self, ctx: Context, objectives: Sequence[Any], constraints: Sequence[Any] = (),
                 screen_fidelity: float | None = None, worker: str | int = 0, journal: str | Path | None = None,
                 halving: int = 0, rung_step: int = 0):
        if objectives is None or len(objectives) == 0:
            raise ConfigError("no objectives given; name at least one, e.g. --objectives perplexity,latency_lut")
        self.ctx = ctx
        self.space = ctx.space
        self.objectives: list[Objective] = [get_objective(o) for o in objectives]
        names = [o.name for o in self.objectives]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"objective {sorted(dup)[0]!r} is listed twice")
        self.names = names
        self.directions = [o.direction for o in self.objectives]
        self.constraints: list[Constraint] = [c if isinstance(c, Constraint) else Constraint.parse(str(c)) for c in constraints]
        self._constraint_obj: dict[str, Objective] = {}
        for c in self.constraints:
            if c.objective == "params_ratio":
                for b in (c.lo, c.hi):
                    if b is not None and not 0 < b <= 1:
                        raise ConfigError(f"constraint on params_ratio: bound {b} is outside (0, 1]; a ratio is kept/dense params")
            if c.objective not in names and c.objective not in self._constraint_obj:
                self._constraint_obj[c.objective] = get_objective(c.objective)
        if screen_fidelity is not None and not 0 < screen_fidelity <= 1:
            raise ConfigError(f"screen fidelity must be in (0, 1], got {screen_fidelity}")
        self.screen_fidelity = None if screen_fidelity in (None, 1, 1.0) else float(screen_fidelity)
        from .halving import ladder, ladder_step

        self.halving = int(halving)  # eta, the promoted share; ``rung_step`` spaces the fidelities
        self.rungs = ladder(self.screen_fidelity, ladder_step(rung_step, self.halving)) if self.halving else \
            ([self.screen_fidelity, 1.0] if self.screen_fidelity is not None else [1.0])
        # objectives scored below full fidelity, per rung; the first rung is the screening
        self._at: dict[float, dict[str, Objective]] = {f: {} for f in self.rungs[:-1]}
        for o in self.objectives:
            for f in self.rungs[:-1]:
                low = o.at_fidelity(f)
                if low is not o:
                    self._at[f][o.name] = low
        self._screen: dict[str, Objective] = self._at[self.rungs[0]] if len(self.rungs) > 1 else {}
        self.extra_seeds: list[tuple[Subnet, str]] = []  # e.g. allocation seeds for the first generation
        self._log = np.array([o.traits.log_scale for o in self.objectives])
        self.worker = str(worker)
        self.cache: dict[str, dict] = {}
        self.n_calls = 0  # objective evaluations actually run (cache misses)
        self.n_hits = 0  # evaluate() calls answered from the cache (duplicates the optimiser proposed)
        self.objective_s: dict[str, float] = {}  # seconds spent in each objective's score (search cost split)
        self._journal = Journal(journal) if isinstance(journal, (str, Path)) else journal
        self._setup_done = False

    # -- columns -----------------------------------------------------------------------------
    def screen_column(self, name: str) -> str:
        return self.rung_column(name, self.rungs[0])

    def rung_column(self, name: str, fidelity: float) -> str:
        """The column of ``name``'s value at ``fidelity`` (``NAME@f``; ``NAME`` at full fidelity or when not screened)."""
        return f"{name}@{_fmt_fid(fidelity)}" if fidelity < 1 and name in self._screen else name

    @property
    def search_columns(self) -> list[str]:
        """The columns the optimiser minimises (screening values where screening is on)."""
        return [self.screen_column(n) for n in self.names]

    @property
    def constraint_columns(self) -> list[str]:
        return [c.objective for c in self.constraints]

    def signs(self) -> np.ndarray:
        return np.array([-1.0 if d == "maximize" else 1.0 for d in self.directions])

    # -- setup and pre-flight checks ---------------------------------------------------------------
    def smallest(self) -> Subnet:
        """The smallest subnet of the space (one layer if dropping is allowed, 1 group, fewest heads and neurons)."""
        d, n0 = self.space.dims, self.space.neuron_choices[0]
        keep_one = self.space.allow_layer_drop
        best = 0
        if keep_one and self.ctx.ranking.layer_scores is not None:
            best = int(np.argmax(self.ctx.ranking.layer_scores))
        q = self.space.head_choices[0]
        return Subnet(tuple(self.space.choice(1, n0, (not keep_one) or i == best, q) for i in range(d.num_layers)))

    def setup(self) -> None:
        """Set up every objective once and check that each constraint can be met at all."""
        if self._setup_done:
            return
        for o in [*self.objectives, *(o for at in self._at.values() for o in at.values()), *self._constraint_obj.values()]:
            o.setup(self.ctx)
        for c in self.constraints:
            obj = self._objective_for(c.objective)
            if obj.traits.kind not in PRECHECKED_KINDS:
                continue  # only size and latency objectives are monotone enough to bound cheaply
            lo_v = checked_score(obj, self.smallest(), self.ctx)
            hi_v = checked_score(obj, self.space.dense(), self.ctx)
            vmin, vmax = min(lo_v, hi_v), max(lo_v, hi_v)
            if c.hi is not None and vmin > c.hi:
                raise ConfigError(f"constraint {c.objective} <= {c.hi}: no subnet can meet it; even the smallest subnet "
                                 f"scores {vmin:.4g} (the dense model {hi_v:.4g}). Raise the budget.")
            if c.lo is not None and vmax < c.lo:
                raise ConfigError(f"constraint {c.objective} >= {c.lo}: no subnet can meet it; the largest value is "
                                 f"{vmax:.4g} (dense model). Lower the bound.")
        self._setup_done = True

    def _objective_for(self, name: str) -> Objective:
        if name in self.names:
            return self.objectives[self.names.index(name)]
        return self._constraint_obj[name]

    # -- repair -------------------------------------------------------------------------------------
    def repair(self, x: Iterable[int]) -> np.ndarray:
        """Clip to bounds, round, and keep the most important layer when all layers are dropped."""
        xl, xu = self.space.bounds()
        v = np.clip(np.rint(np.asarray(list(x), dtype=float)), xl, xu).astype(int)
        keep = self.space.keep_positions()
        if not v[keep].any():
            best = 0 if self.ctx.ranking.layer_scores is None else int(np.argmax(self.ctx.ranking.layer_scores))
            v[keep[best]] = 1
        return v

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, subnet: Subnet, source: str = "", generation: int = 0, row_id: int | None = None) -> dict:
        """The table row of ``subnet``; scored only on a cache miss."""
        key = subnet.key()
        hit = self.cache.get(key)
        if hit is not None:
            self.n_hits += 1
            return hit
        self.setup()
        self.space.validate(subnet)
        t0 = time.perf_counter()
        row: dict[str, Any] = {
            "id": len(self.cache) if row_id is None else int(row_id),
            "key": key,
            "subnet": subnet.to_json(),
            "encoding": json.dumps(self.space.encode(subnet).tolist()),
            "source": source,
            "params": self.space.params(subnet, decoder_only=False),
            "params_ratio": self.space.ratio(subnet),
        }
        try:
            row["fidelity"] = self._score_all(row, subnet)
        except CandidateFailed as e:
            self._fail(row, str(e))
        self._feasibility(row)
        row.update(generation=int(generation), time_s=time.perf_counter() - t0, worker=self.worker)
        self.n_calls += 1
        self.cache[key] = row
        self._append(row)
        return row

    def _score_all(self, row: dict, subnet: Subnet) -> float:
        """Fill ``row`` with every objective's (screening) value; returns the fidelity measured."""
        fid = 1.0
        for o in self.objectives:
            if o.name in self._screen:
                row[self.screen_column(o.name)] = self._timed(o.name, self._screen[o.name], subnet)
                row[o.name] = row[self.screen_column(o.name)]  # highest fidelity measured so far
                fid = self.screen_fidelity
            else:
                row[o.name] = self._timed(o.name, o, subnet)
        for name, o in self._constraint_obj.items():
            row[name] = self._timed(name, o, subnet)
        return fid

    def _fail(self, row: dict, reason: str) -> None:
        """Mark ``row`` failed: every value it lacks is NaN, it is infeasible and never on a front."""
        for c in [*self.names, *self.search_columns, *self._constraint_obj]:
            row.setdefault(c, math.nan)
        row.setdefault("fidelity", 1.0)
        row["reason"] = reason

    def _timed(self, name: str, objective, subnet: Subnet) -> float:
        t0 = time.perf_counter()
        try:
            v = objective.score(subnet, self.ctx)
            if _non_finite(v):
                raise CandidateFailed(f"objective {name!r} returned {float(v)}")
            return finite_float(v, f"objective {objective.name!r}", "score() must return a float", subnet)
        finally:
            self.objective_s[name] = self.objective_s.get(name, 0.0) + time.perf_counter() - t0

    def _feasibility(self, row: dict) -> None:
        g = self.violations(row)
        row["violation"] = float(max(g)) if len(g) else (FAILED if self.failed(row) else 0.0)
        row["feasible"] = bool(row["violation"] <= 0)

    @staticmethod
    def failed(row: dict) -> bool:
        """Whether an objective returned NaN/inf for this row (its ``reason`` says which)."""
        return isinstance(row.get("reason"), str) and bool(row["reason"])

    def violations(self, row: dict) -> list[float]:
        """pymoo's G per constraint (<= 0 feasible), from the highest-fidelity values."""
        if self.failed(row):
            return [FAILED] * len(self.constraints)
        return [c.violation(float(row[c.objective])) for c in self.constraints]

    def search_values(self, row: dict) -> np.ndarray:
        """The row's objective vector as the optimiser sees it (minimisation form): first-rung values."""
        return self.values_at(row, self.rungs[0])

    def values_at(self, row: dict, fidelity: float) -> np.ndarray:
        """The row's objective vector at rung ``fidelity`` (minimisation form, log-scaled where the trait says)."""
        if self.failed(row):
            return np.full(len(self.names), FAILED)
        v = np.array([float(row[self.rung_column(n, fidelity)]) for n in self.names])
        if self._log.any():
            v[self._log] = np.log(np.maximum(v[self._log], 1e-300))
        return v * self.signs()

    def has_value_at(self, row: dict, fidelity: float) -> bool:
        """Whether every objective of ``row`` was measured at rung ``fidelity``."""
        if float(row.get("fidelity", 1.0)) < fidelity - 1e-12:
            return False
        return all(not _missing(row.get(self.rung_column(n, fidelity))) for n in self.names)

    def objective_values(self, row: dict) -> tuple[float, ...]:
        """The row's search values in the objectives' own directions (what Optuna is told)."""
        if self.failed(row):
            return tuple(-FAILED if d == "maximize" else FAILED for d in self.directions)
        return tuple(float(row[c]) for c in self.search_columns)

    def rescore(self, rows: Iterable[dict]) -> int:
        """Score ``rows`` at full fidelity where only a lower-fidelity value exists. Returns how many."""
        return self.promote(rows, 1.0)

    def promote(self, rows: Iterable[dict], fidelity: float) -> int:
        """Score ``rows`` at rung ``fidelity`` where only lower-fidelity values exist. Returns how many."""
        n = 0
        for row in rows:
            if float(row.get("fidelity", 1.0)) >= fidelity or not self._screen or self.failed(row):
                continue
            subnet = Subnet.from_json(row["subnet"])
            t0 = time.perf_counter()
            try:
                for name in self._screen:
                    obj = self._objective_for(name) if fidelity >= 1 else self._at[fidelity][name]
                    row[self.rung_column(name, fidelity)] = row[name] = self._timed(name, obj, subnet)
            except CandidateFailed as e:
                self._fail(row, str(e))
            row["fidelity"] = 1.0 if self.failed(row) else float(fidelity)
            row["time_s"] = float(row.get("time_s", 0.0)) + time.perf_counter() - t0
            self._feasibility(row)
            self.cache[row["key"]] = row
            self._append(row)
            n += 1
        return n

    def outclassed(self, row: dict, margin: float) -> bool:
        """Whether, at the screening rung, another feasible row is no worse than ``row`` on every objective the
        screening does not approximate (size, latency) and better by more than the factor ``margin`` on every one it
        does (log-scaled objectives only; False otherwise, and for ``margin <= 1``).

        Why: full fidelity moves a row's screened value by a factor that varies little between rows (full/screen
        perplexity ratios spanned 0.71-0.94, a factor 1.33, over the 262 rows of 29 archived runs), so a row this far
        behind at the screen stays behind, and re-scoring it can change neither the front nor the pick.
        """
        screened = np.array([n in self._screen for n in self.names])
        first = self.rungs[0]
        if margin <= 1 or not screened.any() or not self._log[screened].all() or self.failed(row) \
                or not self.has_value_at(row, first):
            return False
        v, gap = self.values_at(row, first), math.log(margin)
        for other in self.rows():
            if other["key"] == row["key"] or not other["feasible"] or self.failed(other) or not self.has_value_at(other, first):
                continue
            w = self.values_at(other, first)
            if (w[~screened] <= v[~screened]).all() and (w[screened] + gap <= v[screened]).all():
                return True
        return False

    def baselines(self) -> list[dict]:
        """Rows of the dense model and the uniform/baseline seeds (compared against the front in reports)."""
        return [r for r in self.rows() if r["source"] in ("dense", "uniform") or str(r["source"]).startswith("baseline")]

    def near_front(self, rows: Sequence[dict], n_fronts: int = 1) -> list[dict]:
        """Feasible rows in the first ``n_fronts`` non-dominated fronts of the search values."""
        cand = [r for r in rows if r["feasible"]]
        if not cand:
            return []
        from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

        F = np.stack([self.search_values(r) for r in cand])
        fronts = NonDominatedSorting().do(F, n_stop_if_ranked=None)
        out: list[dict] = []
        for fr in fronts[:n_fronts]:
            out += [cand[int(i)] for i in fr]
        return out

    # -- rows scored elsewhere and the journal ---------------------------------------------------
    def record_to(self, journal: Journal | None) -> None:
        """Append every row scored from now on to ``journal`` (None: keep rows in memory only)."""
        self._journal = journal

    def restore(self, rows: Iterable[dict], *, replace: bool = False, overwrite: bool = True) -> int:
        """Put rows scored earlier (a resumed journal, other workers) in the cache; returns its size.

        ``replace``: forget the cache first. ``overwrite=False``: keep rows already known (a
        shared study's copy never replaces this process's own). Later rows of a key win otherwise
        (a full-fidelity re-score overrides the screening row).
        """
        if replace:
            self.cache = {}
        for row in rows:
            if overwrite or row["key"] not in self.cache:
                self.cache[row["key"]] = row
        return len(self.cache)

    def _append(self, row: dict) -> None:
        if self._journal is not None:
            self._journal.append(row)

    def rows(self) -> list[dict]:
        return sorted(self.cache.values(), key=lambda r: r["id"])

    def describe(self) -> dict:
        """What run.json stores about the problem."""
        return {
            "objectives": [describe_objective(o) for o in self.objectives],
            "constraints": [{"objective": c.objective, "lo": c.lo, "hi": c.hi} for c in self.constraints],
            "screen_fidelity": self.screen_fidelity,
            "rungs": self.rungs if self.halving else None,
            "search_columns": self.search_columns,
        }


def check_objective_matrix(F: np.ndarray, n_rows: int, n_obj: int) -> np.ndarray:
    """Shape check with an error that names the fix (as pymoo does)."""
    F = np.asarray(F, dtype=float)
    if F.shape != (n_rows, n_obj):
        raise ConfigError(f"objective matrix has shape {F.shape}, expected ({n_rows}, {n_obj}): one row per candidate and "
                         f"one column per objective; each objective's score() must return one float")
    return F


__all__ = ["SearchProblem", "SubnetError", "CandidateFailed", "FAILED", "check_objective_matrix", "PRECHECKED_KINDS"]

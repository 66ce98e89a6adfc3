"""The search problem, declared once: space + objectives + constraints + a caching evaluator.

Both drivers (pymoo, Optuna) and the random baseline call :meth:`SearchProblem.evaluate`; it
scores a subnet at most once per run (cache keyed by ``Subnet.key()``), appends every finished
evaluation to a JSONL journal (so a killed run loses nothing), and returns a plain dict row of
the run table (columns in ``nas_llm.run``).

Multi-fidelity: when ``screen_fidelity`` is set, objectives whose ``at_fidelity(f)`` differs
from themselves are first scored cheaply (column ``NAME@f``, which the optimiser sees);
:meth:`rescore` adds the full-fidelity value (column ``NAME``) for points near the front.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from objectives import Constraint, Context, Objective, checked_score, get_objective
from search_spaces import LayerChoice, Subnet, SubnetError
from ..run import to_builtin

# objectives that grow with the subnet: their extremes sit at the smallest subnet and the dense model
SIZE_LIKE = ("params", "params_ratio", "weight_bytes", "kv_cache_bytes", "latency", "latency_lut",
             "latency_roofline", "latency_ms")


def _fmt_fid(f: float) -> str:
    return f"{f:g}"


class SearchProblem:
    """What to optimise. Build it once, hand it to a driver.

    ``objectives``: registered names, import paths or :class:`Objective` instances (>= 1).
    ``constraints``: ``Constraint`` or text like ``"params_ratio in [0.5, 0.8]"``, ``"latency_lut<=20"``.
    ``screen_fidelity``: e.g. 0.25 to screen every candidate with a quarter of the calibration budget.
    ``log_objectives``: objectives the optimiser sees on a log scale (dominance is unchanged; crowding
    distances stop being swamped by perplexities of 1e10 from broken subnets).
    """

    def __init__(self, ctx: Context, objectives: Sequence[Any], constraints: Sequence[Any] = (),
                 screen_fidelity: float | None = None, worker: str | int = 0, journal: str | Path | None = None,
                 log_objectives: Sequence[str] = ("perplexity", "perplexity_reformed")):
        if objectives is None or len(objectives) == 0:
            raise ValueError("no objectives given; name at least one, e.g. --objectives perplexity,latency_lut")
        self.ctx = ctx
        self.space = ctx.space
        self.objectives: list[Objective] = [get_objective(o) for o in objectives]
        names = [o.name for o in self.objectives]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"objective {sorted(dup)[0]!r} is listed twice")
        self.names = names
        self.directions = [o.direction for o in self.objectives]
        self.constraints: list[Constraint] = [c if isinstance(c, Constraint) else Constraint.parse(str(c)) for c in constraints]
        self._constraint_obj: dict[str, Objective] = {}
        for c in self.constraints:
            if c.objective == "params_ratio":
                for b in (c.lo, c.hi):
                    if b is not None and not 0 < b <= 1:
                        raise ValueError(f"constraint on params_ratio: bound {b} is outside (0, 1]; a ratio is kept/dense params")
            if c.objective not in names and c.objective not in self._constraint_obj:
                self._constraint_obj[c.objective] = get_objective(c.objective)
        if screen_fidelity is not None and not 0 < screen_fidelity <= 1:
            raise ValueError(f"screen fidelity must be in (0, 1], got {screen_fidelity}")
        self.screen_fidelity = None if screen_fidelity in (None, 1, 1.0) else float(screen_fidelity)
        self._screen: dict[str, Objective] = {}
        if self.screen_fidelity is not None:
            for o in self.objectives:
                low = o.at_fidelity(self.screen_fidelity)
                if low is not o:
                    self._screen[o.name] = low
        self._log = np.array([n in set(log_objectives) for n in names])
        self.worker = str(worker)
        self.cache: dict[str, dict] = {}
        self.n_calls = 0  # objective evaluations actually run (cache misses)
        self.n_hits = 0  # evaluate() calls answered from the cache (duplicates the optimiser proposed)
        self.objective_s: dict[str, float] = {}  # seconds spent in each objective's score (search cost split)
        self.journal = Path(journal) if journal is not None else None
        self._setup_done = False

    # -- columns -----------------------------------------------------------------------------
    def screen_column(self, name: str) -> str:
        return f"{name}@{_fmt_fid(self.screen_fidelity)}" if name in self._screen else name

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
        """The smallest subnet of the space (one layer if dropping is allowed, 1 group, fewest neurons)."""
        d, n0 = self.space.dims, self.space.neuron_choices[0]
        keep_one = self.space.allow_layer_drop
        best = 0
        if keep_one and self.ctx.ranking.layer_scores is not None:
            best = int(np.argmax(self.ctx.ranking.layer_scores))
        return Subnet(tuple(LayerChoice(1, n0, (not keep_one) or i == best) for i in range(d.num_layers)))

    def setup(self) -> None:
        """Set up every objective once and check that each constraint can be met at all."""
        if self._setup_done:
            return
        for o in [*self.objectives, *self._screen.values(), *self._constraint_obj.values()]:
            o.setup(self.ctx)
        for c in self.constraints:
            if c.objective not in SIZE_LIKE:
                continue  # only size-like objectives are monotone enough to bound cheaply
            obj = self._objective_for(c.objective)
            lo_v = checked_score(obj, self.smallest(), self.ctx)
            hi_v = checked_score(obj, self.space.dense(), self.ctx)
            vmin, vmax = min(lo_v, hi_v), max(lo_v, hi_v)
            if c.hi is not None and vmin > c.hi:
                raise ValueError(f"constraint {c.objective} <= {c.hi}: no subnet can meet it; even the smallest subnet "
                                 f"scores {vmin:.4g} (the dense model {hi_v:.4g}). Raise the budget.")
            if c.lo is not None and vmax < c.lo:
                raise ValueError(f"constraint {c.objective} >= {c.lo}: no subnet can meet it; the largest value is "
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
        keep = v[2::3]
        if not keep.any():
            best = 0 if self.ctx.ranking.layer_scores is None else int(np.argmax(self.ctx.ranking.layer_scores))
            v[3 * best + 2] = 1
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
        row["fidelity"] = fid
        self._feasibility(row)
        row.update(generation=int(generation), time_s=time.perf_counter() - t0, worker=self.worker)
        self.n_calls += 1
        self.cache[key] = row
        self._append(row)
        return row

    def _timed(self, name: str, objective, subnet: Subnet) -> float:
        t0 = time.perf_counter()
        try:
            return checked_score(objective, subnet, self.ctx)
        finally:
            self.objective_s[name] = self.objective_s.get(name, 0.0) + time.perf_counter() - t0

    def _feasibility(self, row: dict) -> None:
        g = self.violations(row)
        row["violation"] = float(max(g)) if len(g) else 0.0
        row["feasible"] = bool(row["violation"] <= 0)

    def violations(self, row: dict) -> list[float]:
        """pymoo's G per constraint (<= 0 feasible), from the highest-fidelity values."""
        return [c.violation(float(row[c.objective])) for c in self.constraints]

    def search_values(self, row: dict) -> np.ndarray:
        """The row's objective vector as the optimiser sees it (minimisation form)."""
        v = np.array([float(row[c]) for c in self.search_columns])
        if self._log.any():
            v[self._log] = np.log(np.maximum(v[self._log], 1e-300))
        return v * self.signs()

    def rescore(self, rows: Iterable[dict]) -> int:
        """Score ``rows`` at full fidelity where only the screening value exists. Returns how many."""
        n = 0
        for row in rows:
            if row.get("fidelity", 1.0) >= 1.0 or not self._screen:
                continue
            subnet = Subnet.from_json(row["subnet"])
            t0 = time.perf_counter()
            for name in self._screen:
                row[name] = self._timed(name, self._objective_for(name), subnet)
            row["fidelity"] = 1.0
            row["time_s"] = float(row.get("time_s", 0.0)) + time.perf_counter() - t0
            self._feasibility(row)
            self.cache[row["key"]] = row
            self._append(row)
            n += 1
        return n

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

    # -- journal --------------------------------------------------------------------------------
    def _append(self, row: dict) -> None:
        if self.journal is None:
            return
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def load_journal(self) -> int:
        """Fill the cache from the journal (a torn last line from a kill is ignored). Returns rows."""
        if self.journal is None or not self.journal.is_file():
            return 0
        for line in self.journal.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.cache[row["key"]] = row  # later lines (rescores) override earlier ones
        return len(self.cache)

    def rows(self) -> list[dict]:
        return sorted(self.cache.values(), key=lambda r: r["id"])

    def describe(self) -> dict:
        """What run.json stores about the problem."""
        return {
            "objectives": [{"name": o.name, "direction": o.direction, "unit": getattr(o, "unit", ""),
                            **({"settings": o.settings()} if callable(getattr(o, "settings", None)) else {})}
                           for o in self.objectives],
            "constraints": [{"objective": c.objective, "lo": c.lo, "hi": c.hi} for c in self.constraints],
            "screen_fidelity": self.screen_fidelity,
            "search_columns": self.search_columns,
        }


def _json_default(o: Any) -> Any:
    o = to_builtin(o)
    if isinstance(o, (int, float, bool)) and not (isinstance(o, float) and math.isnan(o)):
        return o
    if isinstance(o, float) and math.isnan(o):
        return None
    return str(o)


def check_objective_matrix(F: np.ndarray, n_rows: int, n_obj: int) -> np.ndarray:
    """Shape check with an error that names the fix (as pymoo does)."""
    F = np.asarray(F, dtype=float)
    if F.shape != (n_rows, n_obj):
        raise ValueError(f"objective matrix has shape {F.shape}, expected ({n_rows}, {n_obj}): one row per candidate and "
                         f"one column per objective; each objective's score() must return one float")
    return F


__all__ = ["SearchProblem", "SubnetError", "check_objective_matrix", "SIZE_LIKE"]

"""``nas-llm select runs/NAME``: choose one deployment point of a run by a budget, the knee, or weights.

Every rule looks at the values the *exported* model will have: a row reformed by ``nas-llm reform``
is judged by its ``NAME_reformed`` columns, because export ships the reformed weights. Only feasible
rows with all objectives measured are candidates. The same functions serve ``report`` (which point
is "the knee") and ``export --pick knee``, so the three commands always agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nas_llm.errors import ConfigError
from objectives import OBJECTIVES, Traits
from objectives.base import finite_number

from . import front
from .front import full_fidelity  # noqa: F401 (public name of this module)
from .run import Run, to_builtin

RULES = ("budget", "knee", "weights")


@dataclass(frozen=True)
class Objectives:
    """The run's objectives: names (table columns), directions and traits (which is quality, which is speed).

    ``traits`` default to the objective registry's by name (what a run.json written before traits
    existed needs); :meth:`of` takes them from run.json when it stores them.
    """

    names: list[str]
    directions: list[str]
    traits: list[Traits] = field(default_factory=list)
    paths: list[str | None] = field(default_factory=list)  # the import path of an objective given by path
    # name -> the objective's own settings from run.json (e.g. llama.cpp runtime, GGUF type, threads)
    details: dict[str, dict] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not self.traits:
            object.__setattr__(self, "traits", [Traits.of_name(n) for n in self.names])
        if not self.paths:
            object.__setattr__(self, "paths", [None] * len(self.names))

    @classmethod
    def of(cls, settings: dict[str, Any], df: pd.DataFrame | None = None) -> "Objectives":
        objs = settings.get("objectives") or []
        if not objs and df is not None:  # a hand-made table: its columns registered as quality or latency objectives
            objs = [c for c in df.columns if c in OBJECTIVES and Traits.of_name(c).kind in ("quality", "latency")
                    and not (c.endswith("_reformed") and c[: -len("_reformed")] in df.columns)]
        if not objs:
            raise ConfigError("the run lists no objectives (run.json 'objectives'); cannot compare its points")
        entries = [o if isinstance(o, dict) else {"name": str(o)} for o in objs]
        details = {e["name"]: e["settings"] for e in entries if isinstance(e.get("settings"), dict)}
        return cls([e["name"] for e in entries], [e.get("direction", "minimize") for e in entries],
                   [Traits.of_entry(e) for e in entries], [e.get("path") for e in entries], details)

    def trait(self, name: str) -> Traits:
        """The traits of objective ``name`` (a column that is no objective: the registry's, else kind "other")."""
        return self.traits[self.names.index(name)] if name in self.names else Traits.of_name(name)

    def of_kind(self, kind: str) -> list[str]:
        return [n for n, t in zip(self.names, self.traits) if t.kind == kind]

    @property
    def ppl(self) -> str | None:
        """The first quality objective (what --max-ppl bounds and the report's y axis shows)."""
        return next(iter(self.of_kind("quality")), None)

    @property
    def latency(self) -> str | None:
        """The first latency objective (what --max-latency-ms bounds and the report's x axis shows)."""
        return next(iter(self.of_kind("latency")), None)

    @property
    def log_scaled(self) -> list[str]:
        return [n for n, t in zip(self.names, self.traits) if t.log_scale]

    def direction(self, name: str) -> str:
        return self.directions[self.names.index(name)] if name in self.names else "minimize"


def effective_table(df: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """:func:`nas_llm.front.effective_table` of the run's objectives (what export would ship)."""
    return front.effective_table(df, objectives.names)


def candidates(df: pd.DataFrame, objectives: Objectives) -> pd.DataFrame:
    """The rows that may be chosen: :func:`nas_llm.front.eligible` (feasible, finite, full fidelity)."""
    return df[front.eligible(df, objectives.names)]


def front_mask(df: pd.DataFrame, objectives: Objectives) -> np.ndarray:
    """Non-dominated rows of ``df`` among its candidates (by the effective values)."""
    return front.front_mask(df, objectives.names, objectives.directions)


@dataclass
class Selection:
    """The chosen row and a human-readable reason."""

    row: pd.Series
    rule: str
    reason: str
    objectives: Objectives
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> int:
        return int(self.row["id"])

    def describe(self, run_path: str | Path | None = None) -> str:
        r = self.row
        lines = [f"chosen: id {self.id} ({r.get('source', '?')}{', reformed' if bool(r.get('is_reformed', False)) else ''})",
                 f"  why: {self.reason}"]
        for n in self.objectives.names:
            lines.append(f"  {n}: {_fmt(r[n])}")
        if "params_ratio" in r and "params_ratio" not in self.objectives.names:
            lines.append(f"  params_ratio: {_fmt(r['params_ratio'])}")
        if "subnet" in r and isinstance(r["subnet"], str):
            from search_spaces import Subnet

            s = Subnet.from_json(r["subnet"])
            lines.append(f"  subnet: {s.summary()}")
            lines.append("  per layer (kv groups/neurons, x = dropped): " + " ".join(
                c.label() for c in s.layers))
        if run_path is not None:
            lines.append(f"  export: nas-llm export {run_path} --pick {self.id} --out OUT_DIR")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        keep = ["id", "source", "params", "params_ratio", "subnet", "is_reformed", *self.objectives.names]
        row = {k: to_builtin(self.row[k]) for k in keep if k in self.row}
        return {"rule": self.rule, "reason": self.reason, "row": row, **self.details}


def _fmt(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f"{f:.4g}"


def runtime_text(settings: dict | None) -> str:
    """``llama.cpp q4_k_m, 2 threads, decode after 128 tokens``: where and how a latency was timed ('' if unknown)."""
    s = settings or {}
    if not s.get("runtime"):
        return ""
    what = (f"prefill of {s['n_tokens']} tokens" if s.get("mode") == "prefill" else
            f"decode after {s['n_context']} tokens" if s.get("mode") == "decode" else s.get("mode", ""))
    parts = [f"{s['runtime']} {s.get('type', '')}".strip(), f"{s['threads']} threads" if s.get("threads") else "", what]
    return ", ".join(p for p in parts if p)


def label(col: str, objectives: Objectives | None = None, say_measured: bool = False) -> str:
    """A column as people read it: its unit, and "predicted" when the value is an estimate, from its traits.

    ``say_measured``: also mark measured latencies ("latency (ms, measured)"), where both kinds may appear
    side by side (report axes). ``NAME_reformed`` reads "NAME ... after reformation".
    """
    if objectives is not None and col not in objectives.names and col.endswith("_reformed") \
            and col[: -len("_reformed")] in objectives.names:
        return label(col[: -len("_reformed")], objectives, say_measured) + " after reformation"
    t = objectives.trait(col) if objectives is not None else Traits.of_name(col)
    parts = [t.unit] if t.unit else []
    if not t.measured:
        parts.append("predicted")
    elif say_measured and t.kind == "latency":
        parts.append("measured")
    runtime = runtime_text(objectives.details.get(col)) if objectives is not None else ""
    if runtime:
        parts.append(runtime)
    return f"{col} ({', '.join(parts)})" if parts else col


# -- rules ---------------------------------------------------------------------------------------------
def _resolve_budget(objectives: Objectives, df: pd.DataFrame, max_latency_ms: float | None, max_params_ratio: float | None,
                    max_ppl: float | None, extra: list[str] | None) -> list[tuple[str, float | None, float | None]]:
    """``[(column, lo, hi)]`` from the CLI-style budget arguments; errors name what is missing."""
    from objectives import Constraint

    out: list[tuple[str, float | None, float | None]] = []
    for flag, val, col in (("--max-latency-ms", max_latency_ms, objectives.latency),
                           ("--max-ppl", max_ppl, objectives.ppl),
                           ("--max-params-ratio", max_params_ratio, "params_ratio")):
        if val is None:
            continue
        if col is None or col not in df.columns:
            raise ConfigError(f"{flag}: this run has no such column (objectives: {', '.join(objectives.names)})")
        if not math.isfinite(float(val)):
            raise ConfigError(f"{flag} {val}: a budget must be a finite number (NaN or inf would disable it)")
        out.append((col, None, float(val)))
    for text in extra or []:
        c = Constraint.parse(text)
        if c.objective not in df.columns:
            raise ConfigError(f"budget {text!r}: no column {c.objective!r} in the run (objectives: {', '.join(objectives.names)})")
        out.append((c.objective, c.lo, c.hi))
    return out


def _violation(v: float, lo: float | None, hi: float | None) -> float:
    """Relative violation (0 when met), so budgets in different units can be compared."""
    worst = 0.0
    if hi is not None and v > hi:
        worst = max(worst, (v - hi) / max(abs(hi), 1e-12))
    if lo is not None and v < lo:
        worst = max(worst, (lo - v) / max(abs(lo), 1e-12))
    return worst


def _budget_text(budget: list[tuple[str, float | None, float | None]]) -> str:
    parts = []
    for col, lo, hi in budget:
        if lo is not None and hi is not None:
            parts.append(f"{lo:g} <= {col} <= {hi:g}")
        elif hi is not None:
            parts.append(f"{col} <= {hi:g}")
        else:
            parts.append(f"{col} >= {lo:g}")
    return " and ".join(parts)


def by_budget(df: pd.DataFrame, objectives: Objectives, budget: list[tuple[str, float | None, float | None]],
              optimize: str | None = None) -> Selection:
    """Among rows meeting every budget, the best in ``optimize`` (default: perplexity, or latency when
    the only budget is on perplexity). No row meets it -> ValueError naming the closest row."""
    if not budget:
        raise ConfigError("no budget given; pass --max-latency-ms, --max-ppl, --max-params-ratio or --budget 'NAME<=X'")
    cand = candidates(df, objectives)
    if cand.empty:
        raise ConfigError("the run has no feasible, fully measured point")
    if optimize is None:
        only_ppl = all(col == objectives.ppl for col, _, _ in budget)
        optimize = (objectives.latency if only_ppl else objectives.ppl) or objectives.names[0]
    if optimize not in cand.columns:
        raise ConfigError(f"cannot optimise {optimize!r}: not a column of the run (objectives: {', '.join(objectives.names)})")
    viol = np.array([max(_violation(float(r[c]), lo, hi) for c, lo, hi in budget) for _, r in cand.iterrows()])
    ok = cand[viol == 0]
    text = _budget_text(budget)
    if ok.empty:
        i = int(np.argmin(viol))
        near = cand.iloc[i]
        vals = ", ".join(f"{c} {_fmt(near[c])}" for c, _, _ in budget)
        raise ConfigError(f"no evaluated subnet meets {text}; the closest is id {int(near['id'])} ({vals}; "
                         f"{viol[i] * 100:.1f}% over its tightest budget). Relax the budget or search longer.")
    sign = -1.0 if objectives.direction(optimize) == "maximize" else 1.0
    best = ok.iloc[int(np.argmin(sign * ok[optimize].to_numpy(float)))]
    why = (f"meets {text}; of the {len(ok)} points within budget ({len(cand)} feasible and fully measured) it has the "
           f"{'highest' if sign < 0 else 'lowest'} {optimize} ({_fmt(best[optimize])})")
    return Selection(best, "budget", why, objectives, {"budget": text, "within_budget": int(len(ok))})


def scaled_matrix(df: pd.DataFrame, objectives: Objectives) -> np.ndarray:
    """Objective values as the knee and ASF compare them: ``log_scale`` objectives (perplexity) on a log scale.

    A front spans perplexities from ~20 to 1e9 and more; on a linear scale every usable model is squashed
    into one corner and the "knee" lands on a broken one. Log perplexity is the loss the model optimises.
    """
    F = df[objectives.names].to_numpy(float).copy()
    for j, t in enumerate(objectives.traits):
        if t.log_scale and np.all(F[:, j] > 0):
            F[:, j] = np.log(F[:, j])
    return F


def _log_note(objectives: Objectives) -> str:
    return f" (log {', '.join(objectives.log_scaled)})" if objectives.log_scaled else ""


def by_knee(df: pd.DataFrame, objectives: Objectives) -> Selection:
    """pymoo's high trade-off point of the front; with several, the one farthest below the line through
    the front's extremes (Das' knee)."""
    from .front import knee_index, knee_points

    cand = candidates(df, objectives)
    if cand.empty:
        raise ConfigError("the run has no feasible, fully measured point")
    F = scaled_matrix(cand, objectives)
    knees = [int(k) for k in knee_points(F, objectives.directions)]
    das = knee_index(F, objectives.directions)
    pick = das if das in knees or not knees else knees[0]
    if len(knees) > 1 and das not in knees:
        # the high trade-off point nearest (normalised) to Das' knee
        from .front import _as_matrix

        A = _as_matrix(F, objectives.directions)
        lo, hi = A.min(0), A.max(0)
        N = (A - lo) / np.where(hi > lo, hi - lo, 1.0)
        pick = min(knees, key=lambda k: float(np.linalg.norm(N[k] - N[das])))
    row = cand.iloc[pick]
    n_front = int(front_mask(cand, objectives).sum())
    why = (f"knee of the {n_front}-point front{_log_note(objectives)}: pymoo's high trade-off point"
           f"{'s ' + str([int(cand.iloc[k]['id']) for k in knees]) if len(knees) > 1 else ''} "
           f"(giving up a little of one objective buys the most of the other)")
    return Selection(row, "knee", why.replace("  ", " "), objectives, {"knees": [int(cand.iloc[k]["id"]) for k in knees]})


def parse_weights(text: str, objectives: Objectives) -> np.ndarray:
    """``"perplexity=1,latency=2"`` or ``"1,2"`` (objective order) -> weight vector."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    w = np.zeros(len(objectives.names))
    if all("=" in p for p in parts):
        for p in parts:
            k, v = p.split("=", 1)
            k = k.strip()
            alias = {"ppl": objectives.ppl, "latency": objectives.latency}.get(k, k)
            if alias not in objectives.names:
                raise ConfigError(f"--weights: unknown objective {k!r}; objectives are {', '.join(objectives.names)}")
            w[objectives.names.index(alias)] = _weight(v, text)
    else:
        if len(parts) != len(objectives.names):
            raise ConfigError(f"--weights needs {len(objectives.names)} numbers ({', '.join(objectives.names)}) or NAME=W pairs, got {text!r}")
        w[:] = [_weight(p, text) for p in parts]
    return w


def _weight(v: str, text: str) -> float:
    return finite_number(v, f"--weights {text!r}:", "; e.g. --weights perplexity=1,latency=2", minimum=0)


def by_weights(df: pd.DataFrame, objectives: Objectives, weights: np.ndarray) -> Selection:
    """The front point minimising pymoo's ASF on the normalised front (larger weight = matters more)."""
    from .front import asf_index

    cand = candidates(df, objectives)
    if cand.empty:
        raise ConfigError("the run has no feasible, fully measured point")
    i = asf_index(scaled_matrix(cand, objectives), weights, objectives.directions)
    row = cand.iloc[i]
    wt = ", ".join(f"{n}={w:g}" for n, w in zip(objectives.names, weights))
    return Selection(row, "weights", f"smallest weighted (ASF) distance to the ideal point on the normalised front{_log_note(objectives)} with weights {wt}",
                     objectives, {"weights": dict(zip(objectives.names, map(float, weights)))})


def load(run: Run | str | Path) -> tuple[Run, pd.DataFrame, Objectives]:
    """``(run, effective table, objectives)`` of a run folder; errors when it has no evaluations."""
    run = run if isinstance(run, Run) else Run(run)
    settings = run.settings()
    df = run.table()
    if df.empty:
        raise ConfigError(f"{run.table_file} has no evaluations yet; run `nas-llm search` first")
    objectives = Objectives.of(settings, df)
    return run, effective_table(df, objectives), objectives


def select(run: Run | str | Path, rule: str = "knee", *, max_latency_ms: float | None = None, max_params_ratio: float | None = None,
           max_ppl: float | None = None, budget: list[str] | None = None, weights: str | np.ndarray | None = None,
           optimize: str | None = None) -> Selection:
    """Python entry point of ``nas-llm select``."""
    _, df, objectives = load(run)
    if rule == "budget":
        return by_budget(df, objectives, _resolve_budget(objectives, df, max_latency_ms, max_params_ratio, max_ppl, budget), optimize)
    if rule == "knee":
        return by_knee(df, objectives)
    if rule == "weights":
        if weights is None:
            raise ConfigError("rule 'weights' needs --weights, e.g. --weights perplexity=1,latency=1")
        w = parse_weights(weights, objectives) if isinstance(weights, str) else np.asarray(weights, float)
        return by_weights(df, objectives, w)
    raise ConfigError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")


def pick(run: Run | str | Path, spec: str | int) -> Selection:
    """``export --pick``: a row id, or ``knee``."""
    s = str(spec).strip().lower()
    if s == "knee":
        return select(run, "knee")
    try:
        rid = int(s)
    except ValueError:
        raise ConfigError(f"--pick must be a row id (see `nas-llm report` / evaluations.csv) or 'knee', got {spec!r}") from None
    _, df, objectives = load(run)
    rows = df[df["id"] == rid]
    if rows.empty:
        raise ConfigError(f"no evaluation with id {rid} in {Run(run).table_file if not isinstance(run, Run) else run.table_file} "
                         f"(ids {int(df['id'].min())}..{int(df['id'].max())})")
    return Selection(rows.iloc[0], "id", f"picked by id {rid}", objectives)


__all__ = ["Objectives", "Selection", "by_budget", "by_knee", "by_weights", "candidates", "effective_table", "front_mask", "full_fidelity",
           "label", "load", "parse_weights", "pick", "scaled_matrix", "select"]

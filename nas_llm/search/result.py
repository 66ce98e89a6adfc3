"""What a search returns, whichever driver ran it: every evaluation, the Pareto set, hypervolume history.

The front is ``nas_llm.front``'s (eligible rows: feasible, finite, full fidelity; pymoo's non-dominated
sorting and HV), never computed here by hand.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from nas_llm.front import eligible as front_eligible, hypervolume, mark_pareto, reference_point
from nas_llm.model.atomic import atomic_write_text
from nas_llm.run import Run


def objective_matrix(df: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    return df[list(names)].to_numpy(dtype=float)


def default_reference(df: pd.DataFrame, names: Sequence[str], directions: Sequence[str], margin: float = 0.1) -> list[float]:
    """Nadir (+``margin`` of the range) of the eligible rows of ``df``; used from generation 0 on."""
    ok = front_eligible(df, names)
    pts = objective_matrix(df[ok] if ok.any() else df, names)
    pts = pts[np.isfinite(pts).all(axis=1)]  # failed candidates have no values
    if not len(pts):
        return [float("nan")] * len(names)
    return reference_point(pts, directions, margin).tolist()


def first_generation_reference(rows: list[dict], names: Sequence[str], directions: Sequence[str]) -> list[float]:
    """The default hypervolume reference: nadir (+10%) of the first generation's eligible rows."""
    df = pd.DataFrame(rows)
    return default_reference(df[df["generation"] == df["generation"].min()], names, directions)


def hv_history(df: pd.DataFrame, names: Sequence[str], directions: Sequence[str], ref: Sequence[float]) -> pd.DataFrame:
    """Hypervolume of the eligible rows seen up to each generation (one row per generation)."""
    rows = []
    if df.empty:
        return pd.DataFrame(columns=["evaluations", "generation", "hypervolume"])
    ok = front_eligible(df, names)
    F = objective_matrix(df, names)
    gen = df["generation"].to_numpy(dtype=int)
    for g in sorted(set(gen.tolist())):
        upto = gen <= g
        rows.append({"evaluations": int(upto.sum()), "generation": int(g),
                     "hypervolume": hypervolume(F[upto & ok], ref, directions) if (upto & ok).any() else 0.0})
    return pd.DataFrame(rows)


@dataclass
class SearchResult:
    """``table``: one row per evaluated subnet (run-folder columns); ``pareto`` marks the front."""

    table: pd.DataFrame
    objectives: list[str]
    directions: list[str]
    reference_point: list[float]
    history: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["evaluations", "generation", "hypervolume"]))

    @classmethod
    def from_rows(cls, rows: list[dict], names: Sequence[str], directions: Sequence[str],
                  ref: Sequence[float] | None = None) -> "SearchResult":
        df = pd.DataFrame(rows)
        if not df.empty:
            df = df.sort_values("id").reset_index(drop=True)
        df = mark_pareto(df, names, directions)
        if ref is None:
            ref = default_reference(df, names, directions) if not df.empty else [float("nan")] * len(names)
        return cls(df, list(names), list(directions), [float(v) for v in ref], hv_history(df, names, directions, ref))

    context: Any = field(default=None, repr=False, compare=False)  # the search's Context (model, tokenizer...)

    @property
    def front(self) -> pd.DataFrame:
        """The Pareto set, sorted by the first objective."""
        return self.table[self.table["pareto"]].sort_values(self.objectives[0])

    @property
    def hypervolume(self) -> float:
        return float(self.history["hypervolume"].iloc[-1]) if len(self.history) else 0.0

    def save(self, run: Run) -> None:
        """evaluations.csv/.parquet, hypervolume.csv, front.json (all atomic)."""
        run.write_table(self.table)
        atomic_write_text(run.path / "hypervolume.csv", self.history.to_csv(index=False))
        atomic_write_text(run.path / "front.json", json.dumps({
            "ids": [int(i) for i in self.front["id"]],
            "objectives": self.objectives, "directions": self.directions,
            "reference_point": self.reference_point,
            "hypervolume": self.hypervolume,
        }, indent=1))

    def closest(self) -> pd.Series | None:
        """When no row is feasible: the row nearest to feasibility (least violation), else None."""
        t = self.table
        if t.empty or t["feasible"].astype(bool).any() or "violation" not in t:
            return None
        return t.sort_values(["violation", "id"]).iloc[0]

    def __repr__(self) -> str:
        n = len(self.table)
        near = self.closest()
        if near is not None:
            vals = ", ".join(f"{c}={float(near[c]):.4g}" for c in dict.fromkeys([*self.objectives, "params_ratio"]) if c in near)
            return (f"SearchResult({n} evaluations; nothing was feasible; the closest point is id {int(near['id'])} "
                    f"({vals}, violation {float(near.get('violation', float('nan'))):.4g}))")
        return (f"SearchResult({n} evaluations, front of {int(self.table['pareto'].sum()) if n else 0}, "
                f"hypervolume {self.hypervolume:.4g} at reference {self.reference_point})")

"""What a search returns, whichever driver ran it: every evaluation, the Pareto set, hypervolume history.

The front is ``nas_llm.front``'s (eligible rows: feasible, finite, full fidelity; pymoo's non-dominated
sorting and HV), never computed here by hand.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from nas_llm.front import eligible as front_eligible, hypervolume, mark_pareto, reference_point  # noqa: F401 (front_eligible: benchmarks)
from nas_llm.model.atomic import atomic_write_text
from nas_llm.run import Run
from search_spaces import Subnet


def objective_matrix(df: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    return df[list(names)].to_numpy(dtype=float)


def default_reference(df: pd.DataFrame, names: Sequence[str], directions: Sequence[str], margin: float = 0.1) -> list[float]:
    """Nadir (+``margin`` of the range) of the eligible rows of ``df``; used from generation 0 on."""
    ok = front_eligible(df, names)
    pts = objective_matrix(df[ok] if ok.any() else df, names)
    return reference_point(pts, directions, margin).tolist()


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

    @property
    def front(self) -> pd.DataFrame:
        """The Pareto set, sorted by the first objective."""
        return self.table[self.table["pareto"]].sort_values(self.objectives[0])

    def subnets(self) -> list[Subnet]:
        return [Subnet.from_json(s) for s in self.front["subnet"]]

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

    @classmethod
    def load(cls, path: str | Path) -> "SearchResult":
        run = Run(path).require()
        s = run.settings()
        names = [o["name"] for o in s["objectives"]]
        dirs = [o["direction"] for o in s["objectives"]]
        front = json.loads((run.path / "front.json").read_text())
        hist_file = run.path / "hypervolume.csv"
        hist = pd.read_csv(hist_file) if hist_file.is_file() else pd.DataFrame()
        return cls(run.table(), names, dirs, front["reference_point"], hist)

    def __repr__(self) -> str:
        return (f"SearchResult({len(self.table)} evaluations, front of {int(self.table['pareto'].sum()) if len(self.table) else 0}, "
                f"hypervolume {self.hypervolume:.4g} at reference {self.reference_point})")

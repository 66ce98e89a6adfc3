"""A run folder (``runs/NAME``): the contract between search, reformation, report, select and export.

Layout::

    run.json            settings: model, objectives [{name, direction}], constraints, seed, granularity,
                        calibration {source, n_samples, seq_len, seed}, importance, driver, command, created
    ranking.json        the importance ranking used to resolve subnets (search_spaces.Ranking)
    evaluations.csv     one row per evaluated subnet (also .parquet); columns below
    hypervolume.csv     evaluations, generation, hypervolume (after every generation)
    front.json          {"ids": [...], "reference_point": [...]} of the Pareto set

``evaluations`` columns: id, key (Subnet.key()), subnet (JSON), encoding (JSON list), source
(dense | uniform | init | random | nsga2 | tpe | baseline:NAME ...), params, params_ratio, one column
per objective name (highest fidelity measured), "NAME@FID" for lower fidelities, feasible, pareto,
time_s, worker; after ``nas-llm reform``: reformed (bool) and "NAME_reformed" per objective.
Writes are atomic (temp file + rename) so a killed process never leaves a torn table.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from nas_llm.errors import ConfigError
from nas_llm.model.atomic import atomic_path, atomic_write_text
from search_spaces import Ranking, Subnet

EXPORTS_FILE = "exports.json"  # [{id, out, reformed}]: where each row was exported, so the report finds its eval.json


def to_builtin(v: Any) -> Any:
    """numpy scalars (as pandas rows hold them) as plain Python numbers/bools, for JSON."""
    import numpy as np

    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


class Run:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    # -- files ---------------------------------------------------------------------------------
    @property
    def settings_file(self) -> Path:
        return self.path / "run.json"

    @property
    def table_file(self) -> Path:
        return self.path / "evaluations.csv"

    @property
    def ranking_file(self) -> Path:
        return self.path / "ranking.json"

    def exists(self) -> bool:
        return self.settings_file.is_file()

    def require(self) -> "Run":
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a nas-llm run folder (no run.json); create one with `nas-llm search --out {self.path}`")
        return self

    # -- settings ----------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        return json.loads(self.require().settings_file.read_text())

    def write_settings(self, settings: dict[str, Any]) -> None:
        atomic_write_text(self.settings_file, json.dumps(settings, indent=1, default=str))

    def ranking(self) -> Ranking:
        return Ranking.load(self.ranking_file)

    # -- table -------------------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        self.require()
        if not self.table_file.is_file():
            return pd.DataFrame()
        return pd.read_csv(self.table_file)

    def write_table(self, df: pd.DataFrame) -> None:
        atomic_write_text(self.table_file, df.to_csv(index=False))
        try:
            with atomic_path(self.path / "evaluations.parquet") as tmp:
                df.to_parquet(tmp, index=False)
        except (ImportError, ValueError):
            pass

    def subnet(self, row_id: int) -> Subnet:
        df = self.table()
        rows = df[df["id"] == row_id]
        if rows.empty:
            raise ConfigError(f"no evaluation with id {row_id} in {self.table_file} (ids {df['id'].min()}..{df['id'].max()})")
        return Subnet.from_json(rows.iloc[0]["subnet"])

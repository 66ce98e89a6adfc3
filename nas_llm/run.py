"""A run folder (``runs/NAME``): the contract between search, reformation, report, select and export.

Layout::

    run.json            settings: model, objectives [{name, direction}], constraints, seed, granularity,
                        calibration {source, n_samples, seq_len, seed}, importance, driver, command, created
    ranking.json        the importance ranking used to resolve subnets (search_spaces.Ranking)
    evaluations.csv     one row per evaluated subnet (also .parquet); columns below
    hypervolume.csv     evaluations, generation, hypervolume (after every generation)
    front.json          {"ids": [...], "reference_point": [...]} of the Pareto set
    .lock               held (fcntl.flock) by the one process writing the folder; holds its pid

``evaluations`` columns: id, key (Subnet.key()), subnet (JSON), encoding (JSON list), source
(dense | uniform | init | random | nsga2 | tpe | baseline:NAME ...), params, params_ratio, one column
per objective name (highest fidelity measured), "NAME@FID" for lower fidelities, feasible, pareto,
time_s, worker; after ``nas-llm reform``: reformed (bool) and "NAME_reformed" per objective.
Writes are atomic (temp file + rename) so a killed process never leaves a torn table, and one
process at a time writes a run folder (:meth:`Run.lock`, an OS file lock released by the kernel
even on SIGKILL).
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from nas_llm.errors import ConfigError, ModelMismatchError, RunFolderError
from nas_llm.model.atomic import atomic_path, atomic_write_text
from search_spaces import Ranking, Subnet

LOCK_FILE = ".lock"
_HELD: dict[Path, int] = {}  # folders this process has locked -> nesting depth (the lock is re-entrant per process)

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

    @contextmanager
    def lock(self) -> Iterator["Run"]:
        """Hold the folder's writer lock (created with the folder); a second process gets a clear error.

        Re-entrant within one process (the CLI holds it around ``run_search``, which takes it too).
        The lock file stays; only the flock on it counts, so a crashed holder never blocks anyone.
        """
        key = self.path.resolve()
        if key in _HELD:
            _HELD[key] += 1
            try:
                yield self
            finally:
                _HELD[key] -= 1
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderError(f"{self.path} is in use by another nas-llm process (pid {holder}); wait for it to finish "
                                 f"or choose another --out") from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            _HELD[key] = 1
            yield self
        finally:
            _HELD.pop(key, None)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # -- settings ----------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        text = self.require().settings_file.read_text()
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise RunFolderError(f"{self.settings_file} is damaged (not valid JSON: {e.msg} at line {e.lineno}); nas-llm "
                                 f"writes it atomically, so it was changed by hand or by another program: restore it "
                                 f"or start a new run") from None

    def write_settings(self, settings: dict[str, Any]) -> None:
        atomic_write_text(self.settings_file, json.dumps(settings, indent=1, default=str))

    def check_model(self, model: Any) -> None:
        """Refuse a model whose weights are not the ones this run searched (``model_fingerprint`` in run.json)."""
        from nas_llm.model.loading import model_fingerprint

        want = self.settings().get("model_fingerprint") if self.exists() else None
        if want is None:
            return  # a run written before fingerprints existed
        got = model_fingerprint(model)
        if got != want:
            raise ModelMismatchError(
                f"the model found now ({self.settings().get('model', '?')}) is not the one {self.path} was searched on "
                f"(weights fingerprint {got} vs {want}); pass the original model, or start a new search")

    def ranking(self) -> Ranking:
        if not self.ranking_file.is_file():
            raise RunFolderError(f"{self.ranking_file} is missing: the run's importance ranking resolves every subnet; "
                                 f"re-create it with `nas-llm search --out {self.path} --resume` (same settings)")
        try:
            return Ranking.load(self.ranking_file)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise RunFolderError(f"{self.ranking_file} is damaged ({e}); re-create it with "
                                 f"`nas-llm search --out {self.path} --resume` (same settings)") from None

    # -- table -------------------------------------------------------------------------------------
    def table(self) -> pd.DataFrame:
        self.require()
        if not self.table_file.is_file():
            return pd.DataFrame()
        try:
            return pd.read_csv(self.table_file)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise RunFolderError(f"{self.table_file} is damaged ({str(e).splitlines()[0]}); every evaluation is also in "
                                 f"{self.path / 'evaluations.jsonl'}: rebuild the table with `nas-llm search --out {self.path} "
                                 f"--resume`") from None

    def write_table(self, df: pd.DataFrame) -> None:
        atomic_write_text(self.table_file, df.to_csv(index=False))
        try:
            with atomic_path(self.path / "evaluations.parquet") as tmp:
                df.to_parquet(tmp, index=False)
        except ValueError:  # a column pyarrow cannot store: the CSV is the contract
            pass

    def subnet(self, row_id: int) -> Subnet:
        df = self.table()
        rows = df[df["id"] == row_id]
        if rows.empty:
            raise ConfigError(f"no evaluation with id {row_id} in {self.table_file} (ids {df['id'].min()}..{df['id'].max()})")
        return Subnet.from_json(rows.iloc[0]["subnet"])

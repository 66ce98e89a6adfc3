"""An append-only JSONL journal of finished evaluations: a killed search loses nothing.

Every row is written and fsynced the moment it is scored; a later line for the same subnet key
(a full-fidelity re-score) overrides the earlier one when loading, and a torn last line from a
SIGKILL is skipped.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from nas_llm.run import to_builtin


class Journal:
    """``evaluations.jsonl`` (or any JSONL path) of run-table rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def load(self) -> list[dict]:
        """Every complete row in file order (a torn line from a kill is skipped)."""
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def has_rows(self) -> bool:
        return self.path.is_file() and self.path.stat().st_size > 0


def _json_default(o: Any) -> Any:
    o = to_builtin(o)
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, (int, float, bool)):
        return o
    return str(o)


__all__ = ["Journal"]

"""``benchmarks/quality.py``'s row cache: a change of settings never overwrites an older table (it is kept under its
own settings key), and ``--table-only`` refuses a cache of other settings instead of starting an empty table."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchmarks._results as R  # noqa: E402
import benchmarks.quality as Q  # noqa: E402


@pytest.fixture()
def raw(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(Q, "RAW_DIR", tmp_path)
    monkeypatch.setattr(R, "RAW_DIR", tmp_path)
    return tmp_path


def test_new_settings_keep_every_older_table(raw):
    a, b, c = ({"windows": w, "seq_len": 128} for w in (64, 256, 512))
    Q.Cache("flap", a).put("dense", {"ppl": {"wikitext2": 1.0}})
    Q.Cache("flap", b).put("dense", {"ppl": {"wikitext2": 2.0}})
    Q.Cache("flap", c)
    kept = {p.name: json.loads(p.read_text()) for p in raw.glob("quality-flap.*.json")}
    assert set(kept) == {f"quality-flap.{Q.settings_key(a)}.json", f"quality-flap.{Q.settings_key(b)}.json"}
    assert kept[f"quality-flap.{Q.settings_key(a)}.json"]["rows"]["dense"]["ppl"]["wikitext2"] == 1.0
    assert Q.Cache("flap", c).rows == {}  # the live file holds the newest (still empty) table


def test_table_only_refuses_other_settings_and_names_them(raw):
    Q.Cache("flap", {"windows": 64}).put("dense", {"ppl": {"wikitext2": 1.0}})
    with pytest.raises(SystemExit, match=r"windows: 64 cached, 256 asked.*--windows 64"):
        Q.Cache("flap", {"windows": 256}, read_only=True)
    assert json.loads((raw / "quality-flap.json").read_text())["rows"]["dense"]  # untouched
    assert not list(raw.glob("quality-flap.*.json"))


def test_two_runs_of_one_table_keep_each_others_rows(raw):
    s = {"windows": 256}
    a, b = Q.Cache("flap", s), Q.Cache("flap", s)  # both read the (empty) file before either writes
    a.put("wanda-sp@0.6", {"ppl": {"wikitext2": 3.0}})
    b.put("ours@0.6", {"ppl": {"wikitext2": 2.0}})
    a.put("wanda-sp@0.5", {"ppl": {"wikitext2": 4.0}})
    rows = json.loads((raw / "quality-flap.json").read_text())["rows"]
    assert set(rows) == {"wanda-sp@0.6", "ours@0.6", "wanda-sp@0.5"}
    assert set(a.rows) == set(rows)  # the writer sees the other's rows too
    b.put("ours@0.6", {"ppl": {"wikitext2": 1.5}})  # a redo replaces only its own row
    rows = json.loads((raw / "quality-flap.json").read_text())["rows"]
    assert rows["ours@0.6"]["ppl"]["wikitext2"] == 1.5 and rows["wanda-sp@0.5"]["ppl"]["wikitext2"] == 4.0

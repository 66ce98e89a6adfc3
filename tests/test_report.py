"""`nas-llm report`: the HTML opens in headless Chromium without console errors and draws one point per subnet."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from nas_llm.report import POINTS_META, RunData, figures, write_report
from test_select import ROWS, make_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"),
                                    reason="chromium not installed (apt-get install -y chromium); never skipped in CI")
# Chromium's own notices about its software GL, not messages from the page
BROWSER_NOISE = re.compile(r'"\[\.WebGL-|"\[\]Automatic fallback to software WebGL|GL Driver Message')


def chromium(*args: str, user_dir: Path) -> subprocess.CompletedProcess:
    assert CHROMIUM, "chromium is required in CI (.ci/run installs it)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={user_dir}",
             "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def reformed_run(tmp_path_factory):
    """The hand-made run with id 3 reformed (ppl 20 -> 14), so the page has an arrow."""
    import numpy as np

    run = make_run(tmp_path_factory.mktemp("rep"))
    df = run.table()
    df["reformed"] = df["id"] == 3
    df["perplexity_reformed"] = np.where(df["id"] == 3, 14.0, np.nan)
    df["latency_reformed"] = np.where(df["id"] == 3, 35.0, np.nan)
    run.write_table(df)
    return run


def _drawable_ids() -> list[int]:
    return sorted(r[0] for r in ROWS if not math.isnan(r[2]))


def test_front_figure_has_one_point_per_evaluated_subnet(reformed_run):
    fig = figures(reformed_run)["front"]
    pts = [int(i) for t in fig.data if t.meta == POINTS_META for i in t.customdata]
    assert sorted(pts) == _drawable_ids()  # every measured subnet exactly once; the failed row (NaN) is not drawable
    names = {t.name.split(" (")[0]: sorted(int(i) for i in t.customdata) for t in fig.data if t.meta == POINTS_META}
    # reference: hand-computed front of the effective values (3 reformed to ppl 14 dominates 8 and 6)
    assert names["Pareto front"] == [1, 2, 3, 4]
    assert names["dense model"] == [0] and names["baseline: uniform"] == [8]
    assert names["infeasible"] == [7]
    assert names["dominated"] == [5, 6]
    arrows = [a for a in fig.layout.annotations if a.axref == "x"]
    assert len(arrows) == 1 and arrows[0].ay == pytest.approx(math.log10(20.0)) and arrows[0].y == pytest.approx(math.log10(14.0))
    assert any(a.text.startswith("<b>knee</b>") for a in fig.layout.annotations)


def test_layers_hypervolume_parallel(reformed_run):
    from search_spaces import Subnet

    figs = figures(reformed_run, row_id=4)
    lay = figs["layers"]
    d = RunData(reformed_run)
    s4 = Subnet.from_json(d.df[d.df["id"] == 4].iloc[0]["subnet"])
    chosen = [t for t in lay.data if t.visible is True and t.xaxis == "x2"]
    kv = next(t for t in chosen if t.name.startswith("attention"))
    # llama-gqa tiny: 3 KV groups x 2 query heads; the bar is the kept share of query heads
    expect = [c.kv_groups * (c.heads_per_group or 2) / 6 if c.keep else 0.0 for c in s4.layers]
    assert any(c.keep and c.heads_per_group == 1 for c in s4.layers)  # the row cuts query heads inside groups
    assert list(kv.y) == pytest.approx(expect)
    cut = next(i for i, c in enumerate(s4.layers) if c.keep and c.heads_per_group == 1)
    assert kv.text[cut].endswith("x 1/2 query heads")
    drop = next(t for t in chosen if t.name == "dropped layer")
    assert list(drop.x) == [i for i, c in enumerate(s4.layers) if not c.keep]
    hv = figs["hypervolume"].data[0]
    assert list(hv.y) == sorted(hv.y)  # hypervolume never falls as evaluations accumulate
    par = figs["parallel"].data[0]
    assert len(par.dimensions[0]["values"]) == len(_drawable_ids())


@needs_chromium
def test_html_opens_in_chromium_without_console_errors(reformed_run, tmp_path):
    page = write_report(reformed_run, tmp_path / "report.html")
    text = page.read_text()
    assert not re.search(r"<script[^>]*\bsrc=", text) and "Plotly" in text  # plotly.js embedded, nothing fetched: opens offline
    assert f"nas-llm export {reformed_run.path} --pick 2 --out exports/id2" in text
    res = chromium("--dump-dom", page.as_uri(), user_dir=tmp_path / "chrome")
    assert res.returncode == 0, res.stderr[-2000:]
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln and not BROWSER_NOISE.search(ln)]
    assert console == [], "\n".join(console)
    m = re.search(r'data-subnet-points="(-?\d+)"', res.stdout)
    assert m, "the page's load hook did not run (plotly.js failed?)"
    assert int(m.group(1)) == len(_drawable_ids())
    assert re.search(r'data-js-errors="0"', res.stdout)
    assert res.stdout.count('class="main-svg"') >= 4  # the four plotly figures rendered


@needs_chromium
def test_detects_a_broken_page(tmp_path, reformed_run):
    """The console check can fail: a page with a JS error is caught."""
    page = write_report(reformed_run, tmp_path / "report.html")
    bad = tmp_path / "bad.html"
    bad.write_text(page.read_text().replace("<body>", "<body><script>undefinedFunction();</script>", 1))
    res = chromium("--dump-dom", bad.as_uri(), user_dir=tmp_path / "chrome")
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln and not BROWSER_NOISE.search(ln)]
    assert any("undefinedFunction" in ln for ln in console)


def test_report_shows_eval_numbers(tmp_path):
    run = make_run(tmp_path)
    out = tmp_path / "exp2"
    out.mkdir()
    (out / "eval.json").write_text(json.dumps({"params": 1234, "perplexity": {"wikitext2-test": {"ppl": 42.125, "seq_len": 64, "windows": 2, "tokens": 126}},
                                               "zeroshot": {"piqa": {"acc": 0.5, "acc_norm": 0.625, "n": 8, "metric": "acc_norm"}},
                                               "zeroshot_mean": 0.625, "limit": 8}))
    (run.path / "exports.json").write_text(json.dumps([{"id": 2, "out": str(out)}]))
    html = write_report(run).read_text()
    assert "42.125" in html and "0.6250" in html and "test ppl (WikiText-2)" in html


def test_cli(tmp_path, capsys):
    from nas_llm.cli import main

    run = make_run(tmp_path)
    assert main(["report", str(run.path), "--out", str(tmp_path / "r.html"), "--pick", "3"]) == 0
    assert (tmp_path / "r.html").stat().st_size > 1_000_000  # plotly.js inside
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a nas-llm run folder" in capsys.readouterr().err

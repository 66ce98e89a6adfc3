"""``benchmarks/search_speed.py replay``: replaying a run's own promotion rule on its rows gives back the run's own
promotions (the claim RESULTS.md makes about other rules rests on this)."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from nas_llm.search import SearchConfig, run_search
from test_perplexity import TEXT, CharTokenizer
from tiny import tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.search_speed import replay  # noqa: E402


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "calib.txt"
    p.write_text(TEXT)
    return p


def test_replay_of_the_runs_own_rule_gives_its_promotions(tmp_path, calib):
    cfg = SearchConfig(out=str(tmp_path / "run"), objectives=["perplexity_reformed", "params_ratio"], evaluations=24,
                       pop_size=6, granularity=32, calibration=str(calib), calib_samples=2, calib_seq_len=16,
                       importance="magnitude", ppl_samples=4, ppl_seq_len=16, screen=0.25, halving=2, rung_step=2, alloc=False,
                       rescore_baselines=False, screen_dtype="float32", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_search(cfg, model=tiny_model(), tokenizer=CharTokenizer())
    df = pd.read_csv(Path(cfg.out) / "evaluations.csv")
    real = {f: int((df["fidelity"] >= f - 1e-12).sum()) for f in (0.5, 1.0)}
    assert real[0.5] > 0, "the tiny run promoted nothing: the test would prove nothing"
    r = replay(Path(cfg.out), [0.25, 0.5, 1.0], 2)
    assert r["promoted"] == {"0.5": real[0.5], "1": real[1.0]} and r["unknown"] == []
    assert r["promotion_windows"] == 1 * real[0.5] + 2 * real[1.0]  # 4 windows: 1 screened, +1 at 0.5, +2 at 1
    capped = replay(Path(cfg.out), [0.25, 0.5, 1.0], 2, capped=True)
    assert capped["promoted"]["0.5"] <= real[0.5]


def test_summary_reports_an_unpromoted_uniform_seed_by_its_screen_value(tmp_path, calib):
    """The pick is compared with the MLP-only uniform seed only where that seed has a full-fidelity value; a seed the
    halving left at the screen is reported with its screening value and no ratio (the 70 % run of 2026-12-02)."""
    from benchmarks.search_speed import _mlp_only, search_md, summarise

    cfg = SearchConfig(out=str(tmp_path / "run"), objectives=["perplexity_reformed", "params_ratio"], evaluations=18,
                       pop_size=6, granularity=32, calibration=str(calib), calib_samples=2, calib_seq_len=16,
                       importance="magnitude", ppl_samples=4, ppl_seq_len=16, screen=0.25, halving=2, rung_step=2, alloc=False,
                       constraints=["params_ratio in [0.4,0.95]"], rescore_baselines=True, screen_dtype="float32",
                       progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run_search(cfg, model=tiny_model(), tokenizer=CharTokenizer())
    run = Path(cfg.out)
    df = pd.read_csv(run / "evaluations.csv")
    dense = df[df["source"] == "dense"]["subnet"].iloc[0]
    uni = df[(df["source"] == "uniform") & df["subnet"].map(lambda j: _mlp_only(j, dense))]
    assert len(uni), "the tiny run has no MLP-only uniform seed: the test would prove nothing"
    s = summarise(run)
    u = df[df["id"] == s["uniform"]["id"]].iloc[0]
    if u["fidelity"] >= 1:
        assert s["uniform"]["value"] == pytest.approx(float(u["perplexity_reformed"]))
        assert "| x" in search_md([s]).splitlines()[4]
    # the same run with that seed never promoted: screen value only, no ratio, no exit
    df.loc[df["id"] == s["uniform"]["id"], ["fidelity", "perplexity_reformed"]] = [0.25, float("nan")]
    df.to_csv(run / "evaluations.csv", index=False)
    s2 = summarise(run)
    assert s2["uniform"]["value"] is None
    assert s2["uniform"]["screen_value"] == pytest.approx(float(u["perplexity_reformed@0.25"]))
    assert "not promoted (screen" in search_md([s2])

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
                       importance="magnitude", ppl_samples=4, ppl_seq_len=16, screen=0.25, halving=2, alloc=False,
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

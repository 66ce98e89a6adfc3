"""Which ranking should `nas-llm search --importance` default to: one-shot OBS (the paper's Phi, the default until
2026-12-07) or Wanda-sp (what every benchmark search used)? At 70 % the one-shot OBS ranking filled both the pick and
the uniform subnet worst (deployed_pick/2_greedy_obs_70.json); this measures the other ratios.

Fixed subnets: the uniform Wanda-sp-rule subnet (`uniform_subnet(space, r, "ceil")`, no allocation that one ranking
was measured with) at 90/80/60/50 %, filled by each ranking, sequentially reformed (ADMM, 32 x 256 wikitext2-valid
seed 0, as `ours+admm`), scored on the search's validation windows (8 x 2048 wikitext2-valid, seed 1).
Validation only. Rule fixed before running: the default becomes Wanda-sp if it is lower on at least 4 of the 5
ratios (70 % from deployed_pick/2_greedy_obs_70.json included); otherwise it stays OBS.

    python benchmarks/experiments/default_ranking/1_uniform_fill.py OUT.json [RATIO ...]

(As run, the script had its own copy of the fill-and-score loop; it now calls `1_sequential_rerank.py`'s
`protocol()` and `fill_and_score()`, the same steps.)
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "rerank", Path(__file__).resolve().parents[1] / "deployed_pick" / "1_sequential_rerank.py")
_rerank = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_rerank)  # puts the checkout on sys.path; the protocol of the 70 % experiment

from nas_llm.baselines.base import uniform_subnet  # noqa: E402
from nas_llm.model.importance import collect_stats, scores_from_stats  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    ratios = [float(r) for r in sys.argv[2:]] or [0.9, 0.8, 0.6, 0.5]
    model, tok, space, calib, valid = _rerank.protocol()
    stats = collect_stats(model, calib, hessian=True, progress=False)
    rankings = {m: scores_from_stats(model, stats, m).ranking() for m in ("wanda", "obs")}
    jobs = {f"uniform{round(100 * r)}/{name}": (rk, uniform_subnet(space, r, "ceil")) for r in ratios for name, rk in rankings.items()}
    _rerank.fill_and_score(out, jobs, model, space, calib, valid)


if __name__ == "__main__":
    main()

"""Heads by OBS, neurons by Wanda-sp? `1_uniform_fill.py` found Wanda-sp 2-3.5 % lower where the uniform subnets keep
every KV group (90-70 %) and OBS 22-23 % lower where they drop one (60 / 50 %). A hybrid ranking takes OBS's KV-group
and query-head orders and Wanda-sp's neuron order; on subnets that keep every head it is Wanda-sp exactly.

Filled: the uniform 60 / 50 % subnets (as in 1_uniform_fill.py) and the 80 % table pick (s80k-0 row 62, which drops
KV groups in three layers and query heads in one) with wanda / obs / hybrid; sequential ADMM, validation only
(8 x 2048 wikitext2-valid, seed 1). Rule fixed before the run: hybrid is worth a search if it is lower than both at
60 and at 50 %.

    python benchmarks/experiments/default_ranking/2_hybrid.py OUT.json

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
_spec.loader.exec_module(_rerank)  # puts the checkout on sys.path

from nas_llm.baselines.base import uniform_subnet  # noqa: E402
from nas_llm.model.importance import collect_stats, scores_from_stats  # noqa: E402
from nas_llm.run import Run  # noqa: E402
from search_spaces import Ranking, Subnet  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    model, tok, space, calib, valid = _rerank.protocol()
    stats = collect_stats(model, calib, hessian=True, progress=False)
    wanda, obs = (scores_from_stats(model, stats, m).ranking() for m in ("wanda", "obs"))
    hybrid = Ranking(obs.kv_order, wanda.neuron_order, wanda.layer_scores, "hybrid", obs.q_order)
    df = Run("benchmarks/results/runs/s80k-0").table()
    pick = Subnet.from_json(df[df["id"] == 62].iloc[0]["subnet"])
    jobs = {"uniform60/hybrid": (hybrid, uniform_subnet(space, 0.6, "ceil")),
            "uniform50/hybrid": (hybrid, uniform_subnet(space, 0.5, "ceil")),
            **{f"s80k-0#62/{name}": (rk, pick) for name, rk in (("wanda", wanda), ("obs", obs), ("hybrid", hybrid))}}
    _rerank.fill_and_score(out, jobs, model, space, calib, valid)


if __name__ == "__main__":
    main()

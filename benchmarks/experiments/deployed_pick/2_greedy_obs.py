"""Which neurons fill a width: Wanda-sp (the search's ranking), one-shot OBS (the paper's Phi), or a greedy OBS
removal order (ZipLM-style: remove the channels whose removal, with the rest optimally refit, raises the down/o_proj
reconstruction error least, update W and H^-1, repeat). Reformation refits the kept columns, so an order that accounts
for it should keep a better set at the same width.

Fixed subnets (the 70 % pick of s70k-1 and the uniform Wanda-sp subnet at 70 %), each resolved with every ranking,
sequentially reformed (ADMM, 32 x 256 wikitext2-valid seed 0, as `ours+admm`), scored on the search's validation
windows (8 x 2048 wikitext2-valid, seed 1). Validation only: the decision is made on it.

    python benchmarks/experiments/deployed_pick/2_greedy_obs.py OUT.json

(As run, the script carried its own copies of the greedy order and of `ppl()`. It now calls the library's
`nas_llm.model.importance.greedy_obs_order` -- the same algorithm: 16 neurons per update, heads and KV groups one at a
time, checked against brute-force greedy in `tests/test_importance.py` -- and `1_sequential_rerank.py`'s `ppl()`, which
its copy was, through that script's `protocol()` and `fill_and_score()` (2026-12-07 15:05: the same steps, shared with
`../default_ranking/`). The greedy ranking's layer scores were Block Influence then and are now; no layer is dropped here.)
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

_spec = importlib.util.spec_from_file_location("rerank", Path(__file__).with_name("1_sequential_rerank.py"))
_rerank = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_rerank)  # puts the checkout on sys.path; its protocol and fill_and_score (ppl) both experiments used

from nas_llm.baselines.base import uniform_subnet  # noqa: E402
from nas_llm.model.importance import collect_stats, scores_from_stats  # noqa: E402
from nas_llm.run import Run  # noqa: E402
from search_spaces import Subnet  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    model, tok, space, calib, valid = _rerank.protocol()
    stats = collect_stats(model, calib, hessian=True, progress=False)
    rankings = {m: scores_from_stats(model, stats, m).ranking() for m in ("wanda", "obs")}
    t0 = time.perf_counter()
    rankings["obs-greedy"] = scores_from_stats(model, stats, "obs-greedy").ranking()
    print(f"greedy ranking {time.perf_counter() - t0:.1f} s", flush=True)
    df = Run("benchmarks/results/runs/s70k-1").table()
    subnets = {"s70k-1#82": Subnet.from_json(df[df["id"] == 82].iloc[0]["subnet"]),
               "uniform70": uniform_subnet(space, 0.7, "ceil")}
    _rerank.fill_and_score(out, {f"{s}/{r}": (rk, sub) for s, sub in subnets.items() for r, rk in rankings.items()},
                           model, space, calib, valid)


if __name__ == "__main__":
    main()

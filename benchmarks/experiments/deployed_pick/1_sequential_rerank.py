"""Does the deployed procedure (sequential exact ADMM reformation, as `ours+admm` in the quality table) rank a
search's full-fidelity candidates differently from the search value (`perplexity_reformed`: per-layer refit on
dense inputs)?

For every feasible full-fidelity row of the given runs (unique subnets): reform sequentially on the main
protocol's calibration (32 x 256 wikitext2-valid, seed 0), then score validation perplexity on the search's
own windows (8 x 2048 wikitext2-valid, seed 1) and test perplexity (WikiText-2 test, first 4 x 2048).
The rule fixed before any test number is read: the pick is the lowest *validation* ppl after sequential
reformation; test ppl of the other rows is printed as a diagnostic only.

    python benchmarks/experiments/deployed_pick/1_sequential_rerank.py OUT.json RUN [RUN ...]
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.quality import reform_model  # noqa: E402
from nas_llm import load_model  # noqa: E402
from nas_llm.model.data import calibration_batch, eval_windows  # noqa: E402
from nas_llm.model.importance import importance_ranking  # noqa: E402
from nas_llm.model.metrics import nll_sum  # noqa: E402
from nas_llm.run import Run  # noqa: E402
from search_spaces import Subnet, SubnetSpace  # noqa: E402


def ppl(model, ids: torch.Tensor, bs: int = 2) -> float:
    tot, cnt = 0.0, 0
    with torch.no_grad():
        for i in range(0, ids.shape[0], bs):
            t, c = nll_sum(model, ids[i:i + bs], batch_size=bs)
            tot, cnt = tot + t, cnt + c
    return math.exp(tot / cnt)


def protocol() -> tuple:
    """SmolLM2, its space, the reformation calibration (32 x 256 wikitext2-valid, seed 0, as `ours+admm`) and the
    search's validation windows (8 x 2048 wikitext2-valid, seed 1)."""
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m")
    return (model, tok, SubnetSpace.from_model(model), calibration_batch(tok, "wikitext2-valid", 32, 256, seed=0),
            calibration_batch(tok, "wikitext2-valid", 8, 2048, seed=1))


def fill_and_score(out: Path, jobs: dict, model, space, calib, valid) -> dict:
    """For each ``key -> (ranking, subnet)`` not yet in ``out`` (JSON, rewritten after each): the subnet filled by the
    ranking, sequentially reformed (ADMM on ``calib``), and its validation perplexity."""
    res = json.loads(out.read_text()) if out.is_file() else {}
    for key, (rk, sub) in jobs.items():
        if key in res:
            continue
        t0 = time.perf_counter()
        m = reform_model(model, rk.resolve(sub), calib, "admm", sub)
        res[key] = {"valid_seq": ppl(m, valid), "params_ratio": space.ratio(sub), "seconds": round(time.perf_counter() - t0, 1)}
        del m
        out.write_text(json.dumps(res, indent=1))
        print(key, res[key], flush=True)
    return res


def main() -> None:
    out, runs = Path(sys.argv[1]), [Path(r) for r in sys.argv[2:]]
    model, tok, space, calib, valid = protocol()
    test = eval_windows(tok, "wikitext2-test", seq_len=2048, max_windows=4)
    ranking = importance_ranking(model, calib, "wanda", progress=False)
    rows: dict[str, dict] = {}
    for run in runs:
        df = Run(run).table()
        full = df[(df["fidelity"] >= 1.0) & df["feasible"].astype(bool)]
        for _, r in full.iterrows():
            if r["source"] == "dense":
                continue
            d = rows.setdefault(r["key"], {"key": r["key"], "runs": [], "source": r["source"],
                                           "params_ratio": float(r["params_ratio"]),
                                           "search_value": float(r["perplexity_reformed"])})
            d["runs"].append(f"{run.name}#{int(r['id'])}")
    done = json.loads(out.read_text()) if out.is_file() else {}
    for i, (key, d) in enumerate(sorted(rows.items(), key=lambda kv: kv[1]["search_value"])):
        if key in done:
            rows[key] = done[key]
            continue
        t0 = time.perf_counter()
        run_name, rid = d["runs"][0].split("#")
        df = Run(next(r for r in runs if r.name == run_name)).table()
        subnet = Subnet.from_json(df[df["id"] == int(rid)].iloc[0]["subnet"])
        m = reform_model(model, ranking.resolve(subnet), calib, "admm", subnet)
        d["valid_seq"] = ppl(m, valid)
        d["test_seq"] = ppl(m, test)
        d["seconds"] = round(time.perf_counter() - t0, 1)
        del m
        done[key] = d
        out.write_text(json.dumps(done, indent=1))
        print(f"{i}: {d['runs']} {d['source']} ratio {d['params_ratio']:.4f} search {d['search_value']:.3f} "
              f"valid_seq {d['valid_seq']:.3f} test {d['test_seq']:.3f} ({d['seconds']} s)", flush=True)
    best_search = min(done.values(), key=lambda d: d["search_value"])
    best_valid = min(done.values(), key=lambda d: d["valid_seq"])
    print("by search value:", best_search["runs"], round(best_search["test_seq"], 3))
    print("by sequential valid:", best_valid["runs"], round(best_valid["test_seq"], 3))


if __name__ == "__main__":
    main()

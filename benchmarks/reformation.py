"""Reformation benchmark: WikiText-2 test perplexity of the same SmolLM2 subnets with and without reformation.

Subnets: OBS-ranked (``importance_ranking`` on wikitext2-valid) uniform subnets at ~90/80/70/50% of the
decoder parameters, MLP-only (``uniform_at_ratio(r, "mlp")``) and optionally heads+neurons ("both").
Methods: none (plain slicing), bias (FLAP bias compensation), admm (30 iterations), exact (closed form).
Reformation calibrates on wikitext2-valid only; perplexity on wikitext2-test windows of ``--seq-len``.

Results accumulate in ``benchmarks/results/reformation.json`` (keyed by mode, ratio, method, windows),
so the expensive points can be measured in several short runs under the heavy-job lock::

    flock /tmp/nasllm-heavy.lock python benchmarks/reformation.py --ratios 0.7
    flock /tmp/nasllm-heavy.lock python benchmarks/reformation.py --ratios 0.9 0.8 0.5 --windows 4
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import RAW_DIR, header, machine, save_raw, write_section  # noqa: E402
from nas_llm import SubnetSpace, load_model  # noqa: E402
from nas_llm.model.data import calibration_batch, eval_windows  # noqa: E402
from nas_llm.model.importance import importance_ranking  # noqa: E402
from nas_llm.model.loading import cache_dir  # noqa: E402
from nas_llm.model.metrics import perplexity  # noqa: E402
from nas_llm.model.reform import reform  # noqa: E402

NAME = "reformation"
METHODS = ("none", "bias", "admm", "exact")


def _key(mode: str, ratio: float, method: str, windows: int, seq_len: int) -> str:
    return f"{mode}|{ratio:.2f}|{method}|{windows}x{seq_len}"


def _load_raw() -> dict:
    p = RAW_DIR / f"{NAME}.json"
    return json.loads(p.read_text()) if p.is_file() else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.9, 0.8, 0.7, 0.5])
    ap.add_argument("--modes", nargs="+", default=["mlp"], choices=["mlp", "both"])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--windows", type=int, default=16, help="wikitext2-test windows (default 16)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--calib", type=int, nargs=2, default=[64, 256], metavar=("N", "L"), help="reformation calibration (CPU default 64 x 256)")
    ap.add_argument("--rank-calib", type=int, nargs=2, default=[32, 256], metavar=("N", "L"), help="OBS ranking calibration")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense model's perplexity")
    args = ap.parse_args()

    torch.manual_seed(0)
    info = machine()
    raw = _load_raw()
    settings = {"calibration": {"source": "wikitext2-valid", "n_samples": args.calib[0], "seq_len": args.calib[1], "seed": 1},
                "ranking": {"method": "obs", "source": "wikitext2-valid", "n_samples": args.rank_calib[0], "seq_len": args.rank_calib[1], "seed": 0},
                "eval": "wikitext2-test"}
    if raw.get("settings") not in (None, settings):
        print("settings changed: starting a fresh result file")
        raw = {}
    raw["settings"] = settings
    points = raw.setdefault("points", {})

    model, tok = load_model("smollm2-135m")
    space = SubnetSpace.from_model(model)
    rank_ids = calibration_batch(tok, "wikitext2-valid", args.rank_calib[0], args.rank_calib[1], seed=0)
    t = time.perf_counter()
    ranking = importance_ranking(model, rank_ids, "obs", cache_dir=cache_dir() / "rankings")
    print(f"OBS ranking: {time.perf_counter() - t:.1f} s")
    calib = calibration_batch(tok, "wikitext2-valid", args.calib[0], args.calib[1], seed=1)
    test = eval_windows(tok, "wikitext2-test", args.seq_len, args.windows)
    win = f"{test.shape[0]}x{args.seq_len}"

    def evaluate(m) -> tuple[float, float]:
        t0 = time.perf_counter()
        p = perplexity(m, test, batch_size=1)
        return p, time.perf_counter() - t0

    for mode in args.modes:
        for r in args.ratios:
            sub = space.uniform_at_ratio(r, mode)
            plan = ranking.resolve(sub)
            for method in args.methods:
                key = _key(mode, r, method, test.shape[0], args.seq_len)
                if key in points:
                    continue
                t0 = time.perf_counter()
                m = reform(model, plan, calib, method)
                rt = time.perf_counter() - t0
                p, dt = evaluate(m)
                points[key] = {"mode": mode, "ratio": r, "actual_ratio": space.ratio(sub), "subnet": sub.summary(), "method": method,
                               "windows": win, "ppl": p, "reform_s": rt, "eval_s": dt}
                print(f"{mode} {r:.2f} (actual {space.ratio(sub):.3f}) {method}: ppl {p:.3f}, reform {rt:.0f} s, eval {dt:.0f} s", flush=True)
                save_raw(NAME, {**raw, "machine": info})
                write_section(NAME, render(raw, info))  # partial results survive a killed run
                del m
    dkey = f"dense|1.00|none|{win}"
    if not args.no_dense and dkey not in points:  # last: the subnets' before/after ratios matter most
        p, dt = evaluate(model)
        points[dkey] = {"mode": "dense", "ratio": 1.0, "method": "none", "windows": win, "ppl": p, "eval_s": dt, "reform_s": 0.0}
        print(f"dense: ppl {p:.3f} ({dt:.0f} s)", flush=True)
    raw["machine"] = info
    save_raw(NAME, raw)
    write_section(NAME, render(raw, info))
    return 0


def render(raw: dict, info: dict) -> str:
    pts = raw["points"]
    s = raw["settings"]
    cal, rk = s["calibration"], s["ranking"]
    cmd = ("python benchmarks/reformation.py --windows 16  (points already in benchmarks/results/reformation.json are "
           "skipped; delete it to re-measure all)")
    lines = [header("Reformation (issue 4)", info, cmd),
             f"SmolLM2-135M-Instruct fp32, CPU. Subnets: uniform, OBS ranking from {rk['source']} ({rk['n_samples']} x {rk['seq_len']}). "
             f"Reformation calibration: {cal['source']} {cal['n_samples']} x {cal['seq_len']} tokens, seed {cal['seed']}, sequential; "
             "ADMM 30 iterations, rho 0.1 (Jacobi-scaled), damp 0.01. Perplexity: WikiText-2 **test**, consecutive windows "
             "(windows x seq_len given per row). Times: wall clock on a 2-core machine (reform = the whole sequential pass for one "
             "subnet; the 70% row and dense were measured while other jobs shared the machine, the others on a quiet one).\n"]
    dense = {p["windows"]: p["ppl"] for p in pts.values() if p["mode"] == "dense"}
    for w, v in sorted(dense.items()):
        lines.append(f"Dense model: ppl {v:.2f} ({w}).\n")
    groups: dict[tuple, dict] = {}
    for p in pts.values():
        if p["mode"] == "dense":
            continue
        groups.setdefault((p["mode"], p["ratio"], p["windows"]), {})[p["method"]] = p
    lines.append("| subnet | decoder params | windows | " + " | ".join(f"ppl {m}" for m in METHODS) + " | admm/none | exact/none | "
                 + " | ".join(f"reform s ({m})" for m in METHODS[1:]) + " |")
    lines.append("|" + "---|" * (3 + len(METHODS) + 2 + len(METHODS) - 1))
    for (mode, ratio, w), g in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        any_p = next(iter(g.values()))
        row = [f"{mode} {ratio:.0%}", f"{any_p.get('actual_ratio', ratio):.3f}", w]
        row += [f"{g[m]['ppl']:.2f}" if m in g else "-" for m in METHODS]
        for m in ("admm", "exact"):
            row.append(f"{g[m]['ppl'] / g['none']['ppl']:.3f}" if m in g and "none" in g else "-")
        row += [f"{g[m]['reform_s']:.0f}" if m in g else "-" for m in METHODS[1:]]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("\nGoal from the issue: ppl(after)/ppl(before) <= 0.8 at 70%. Cells marked - were not measured (time budget).")
    gaps = [f"{r:.0%}: {abs(g['admm']['ppl'] / g['exact']['ppl'] - 1) * 100:.1f} %" for (_, r, _), g in
            sorted(groups.items(), key=lambda kv: -kv[0][1]) if "admm" in g and "exact" in g]
    if gaps:
        lines.append("\nADMM (30 iterations) vs the exact least-squares solution, relative ppl difference: " + ", ".join(gaps)
                     + ". The closed form is the faster of the two on this CPU; ADMM is the paper's solver and the one that "
                     "generalises to other constraints. FLAP-style bias compensation recovers far less than either.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

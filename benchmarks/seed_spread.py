"""Seed spread: is a searched subnet's margin over uniform a property of the method or of one lucky seed?

Each ``RATIO=RUN`` names a size-constrained search (same command, different ``--seed``). For every
run, the front member the quality table would pick (``quality.front_member``) is reformed with ADMM
and scored on the main protocol's test windows, next to the uniform Wanda-sp + ADMM baseline of the
same ratio, so the margin of each seed is one division:

    python benchmarks/seed_spread.py 0.5=runs/r50 0.5=runs/r50s1 0.7=runs/r70 0.7=runs/r70s1

Rows are cached in ``benchmarks/results/seed_spread.json`` (a re-run only scores new runs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import RAW_DIR, command_line, header, machine, save_raw, write_section  # noqa: E402
from benchmarks.quality import PROTOCOLS, build  # noqa: E402

NAME = "seed_spread"
DATASET = "wikitext2-test"


def parse(pairs: list[str]) -> list[tuple[float, Path]]:
    out = []
    for p in pairs:
        ratio, sep, run = p.partition("=")
        try:
            out.append((float(ratio), Path(run)))
        except ValueError:
            raise SystemExit(f"{p!r}: expected RATIO=RUN, e.g. 0.5=runs/r50s1") from None
        if not sep or not run:
            raise SystemExit(f"{p!r}: expected RATIO=RUN, e.g. 0.5=runs/r50s1")
        if not (Path(run) / "run.json").is_file():
            raise SystemExit(f"{run}: not a search run folder (no run.json); create it with `nas-llm search --out {run}`")
    return out


def table(data: dict) -> str:
    rows = data["rows"]
    out = [header("Seed spread of the searched subnets (main protocol)", data["machine"], data["command"])]
    proto = PROTOCOLS["main"]
    out.append(f"WikiText-2 test ppl, first {proto['windows']} windows of {proto['seq_len']} tokens; calibration "
               f"{proto['calib_samples']} x {proto['calib_seq']} tokens of wikitext2-valid (seed 0) for ranking and ADMM, "
               "as in the quality table. Search seed from each run's `run.json`; search value = the pick's "
               "`perplexity_reformed` on the validation split (what the search minimised).\n")
    out.append("| ratio | run | search seed | params ratio | search value | ours+admm | wanda-sp+admm | ours / wanda-sp |")
    out.append("|---|---|---|---|---|---|---|---|")
    for key in sorted(rows, key=lambda k: (-rows[k]["ratio"], k)):
        r = rows[key]
        if r["method"] != "ours+admm":
            continue
        base = rows.get(f"wanda-sp+admm@{r['ratio']:g}")
        b = base["ppl"] if base else None
        base_cells = "— | —" if b is None else f"{b:.1f} | x{r['ppl'] / b:.2f}"
        out.append(f"| {int(r['ratio'] * 100)}% | `{r['run']}` | {r['seed']} | {r['params_ratio']:.4f} | "
                   f"{r['search_value']:.2f} | {r['ppl']:.1f} | {base_cells} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RATIO=RUN")
    args = p.parse_args(argv)
    pairs = parse(args.runs)

    from nas_llm import load_model
    from nas_llm.baselines import calibration_stats
    from nas_llm.data import calibration_batch
    from nas_llm.evaluate import perplexities
    from nas_llm.run import Run
    from search_spaces import SubnetSpace

    path = RAW_DIR / f"{NAME}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
    proto = PROTOCOLS["main"]
    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m")
    space = SubnetSpace.from_model(model)
    calib = calibration_batch(tok, "wikitext2-valid", proto["calib_samples"], proto["calib_seq"], seed=0)
    stats: list = []

    def stats_fn():
        if not stats:
            stats.append(calibration_stats(model, calib, batch_size=4))
        return stats[0]

    jobs = [("wanda-sp+admm", r, None) for r in sorted({r for r, _ in pairs}, reverse=True)] + \
           [("ours+admm", r, run) for r, run in pairs]
    for method, ratio, run in jobs:
        key = f"{method}@{ratio:g}" + (f":{run}" if run else "")
        if key in data["rows"]:
            continue
        t0 = time.perf_counter()
        m, info = build(method, ratio, model, stats_fn, calib, space, run)
        ppl = perplexities(m, tok, [DATASET], proto["seq_len"], proto["windows"], batch_size=1)[DATASET]["ppl"]
        row = {"method": method, "ratio": ratio, "ppl": ppl, "params_ratio": info["params_ratio"],
               "seconds": round(time.perf_counter() - t0, 1)}
        if run:
            settings, table_ = Run(run).settings(), Run(run).table()
            pick = table_[table_["id"] == info["run_row"]].iloc[0]
            row.update(run=str(run), run_row=info["run_row"], seed=settings.get("seed"),
                       search_value=float(pick["perplexity_reformed"]))
        data["rows"][key] = row
        data["machine"], data["command"] = machine(), command_line()
        save_raw(NAME, data)
        print(f"[seed_spread] {key}: {ppl:.2f} ({row['seconds']} s)", flush=True)
    # the command that reproduces every cached row
    runs = sorted({(r["ratio"], r["run"]) for r in data["rows"].values() if r.get("run")}, key=lambda x: (-x[0], x[1]))
    data["command"] = "python benchmarks/seed_spread.py " + " ".join(f"{r:g}={run}" for r, run in runs)
    save_raw(NAME, data)
    write_section(NAME, table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

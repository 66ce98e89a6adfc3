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


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import RAW_DIR, header, machine, save_raw, write_section  # noqa: E402
from benchmarks.quality import PROTOCOLS, build, setup  # noqa: E402

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
    out.append("| ratio | run | search seed | params ratio | search value | ours+admm | wanda-sp+admm (params ratio) "
               "| ours / wanda-sp |")
    out.append("|---|---|---|---|---|---|---|---|")
    for key in sorted(rows, key=lambda k: (-rows[k]["ratio"], k)):
        r = rows[key]
        if r["method"] != "ours+admm":
            continue
        base = rows.get(f"wanda-sp+admm@{r['ratio']:g}")
        b = base["ppl"] if base else None
        base_cells = "— | —" if b is None else f"{b:.1f} ({base['params_ratio']:.4f}) | x{r['ppl'] / b:.2f}"
        out.append(f"| {int(r['ratio'] * 100)}% | `{r['run']}` | {r['seed']} | {r['params_ratio']:.4f} | "
                   f"{r['search_value']:.2f} | {r['ppl']:.1f} | {base_cells} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RATIO=RUN")
    args = p.parse_args(argv)
    pairs = parse(args.runs)

    from nas_llm.evaluate import perplexities
    from nas_llm.run import Run

    path = RAW_DIR / f"{NAME}.json"
    data = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
    proto = PROTOCOLS["main"]
    jobs = [("wanda-sp+admm", r, None) for r in sorted({r for r, _ in pairs}, reverse=True)] + \
           [("ours+admm", r, run) for r, run in pairs]
    todo = [(f"{m}@{r:g}" + (f":{run}" if run else ""), m, r, run) for m, r, run in jobs]
    todo = [t for t in todo if t[0] not in data["rows"]]
    if todo:
        model, tok, space, calib, stats_fn = setup(proto)
    for key, method, ratio, run in todo:
        t0 = time.perf_counter()
        m, info = build(method, ratio, model, stats_fn, calib, space, run)
        ppl = perplexities(m, tok, [DATASET], proto["seq_len"], proto["windows"], batch_size=1)[DATASET]["ppl"]
        # the subnet itself: the row stays reproducible when the run folder (ignored by git) is gone
        row = {"method": method, "ratio": ratio, "ppl": ppl, "params_ratio": info["params_ratio"],
               "seconds": round(time.perf_counter() - t0, 1), "summary": info["summary"], "subnet": info["subnet"]}
        if run:
            settings, table_ = Run(run).settings(), Run(run).table()
            pick = table_[table_["id"] == info["run_row"]].iloc[0]
            row.update(run=str(run), run_row=info["run_row"], seed=settings.get("seed"),
                       search_value=float(pick["perplexity_reformed"]))
        data["rows"][key] = row
        data["machine"] = machine()
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

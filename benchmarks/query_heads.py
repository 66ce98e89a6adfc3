"""Query heads inside KV groups (issue 17): the same constrained search with the dimension on and off.

For each ratio (80 %, 90 %) two searches with the settings of ``benchmarks/search_speed.py`` (perplexity_reformed
vs params_ratio inside ``[r - 0.015, r + 0.015]``, no layer drop, Wanda-sp ranking, 96 evaluations, 8 x 2048
scored tokens, same seed), one with query heads per KV group searched and one with ``--no-query-heads``. Each
pick (lowest validation ``perplexity_reformed`` within the band) is ADMM-reformed on the main protocol's
calibration (32 x 256 WikiText-2 valid) and scored on WikiText-2 test (4 x 2048) as the quality table does;
the table says how many query heads each pick cut (and KV groups, neurons).

    flock /tmp/nasllm-heavy.lock python benchmarks/query_heads.py                 # runs/qh80-on ... runs/qh90-off
    flock /tmp/nasllm-heavy.lock python benchmarks/query_heads.py --ratios 0.8    # one ratio
Finished runs are reused (``--resume``), so an interrupted benchmark continues; rows of ratios not given are kept
from the raw JSON (``results/query_heads.json``), so ``--ratios 0.9`` adds the 90 % pair to the 80 % one.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import RAW_DIR, command_line, header, machine, save_raw, write_section  # noqa: E402


def cut_counts(space, subnet) -> dict:
    """Query heads, KV groups and neurons the subnet removes from the kept layers (and layers dropped)."""
    d = space.dims
    kept = [c for c in subnet.layers if c.keep]
    return {"query_heads_cut": sum(d.num_heads - c.heads(d.q_per_group) for c in kept),
            "query_heads_cut_inside_groups": sum(c.kv_groups * (d.q_per_group - (c.heads_per_group or d.q_per_group)) for c in kept),
            "kv_groups_cut": sum(d.num_kv_heads - c.kv_groups for c in kept),
            "neurons_cut": sum(d.intermediate - c.neurons for c in kept), "layers_dropped": len(subnet.layers) - len(kept),
            "layers_with_query_head_cuts": sum(c.heads_per_group is not None for c in kept)}


def finished(out: Path, evaluations: int) -> bool:
    """The search in ``out`` spent its budget: its checkpoint (written before each generation is asked for) or its
    hypervolume log (one line per finished generation, the last one too) counts the evaluations done."""
    import csv

    ck, hv = out / "checkpoint.json", out / "hypervolume.csv"
    done = int(json.loads(ck.read_text()).get("evaluations", 0)) if ck.is_file() else 0
    if hv.is_file():
        done = max([done] + [int(r["evaluations"]) for r in csv.DictReader(hv.open())])
    return done >= evaluations


def one(ratio: float, query_heads: bool, args, model, tok, calib, windows) -> dict:
    from benchmarks.quality import front_member, reform_model
    from benchmarks.search_speed import search_config
    from nas_llm.model.metrics import perplexity
    from nas_llm.run import Run
    from nas_llm.search import run_search

    out = Path(args.runs) / f"qh{round(100 * ratio)}-{'on' if query_heads else 'off'}"
    saved = out / "query_heads_row.json"  # this row, written once scored: a rerun after a cut does not redo it
    if saved.is_file():
        return json.loads(saved.read_text())
    config = search_config(ratio, str(out), args.seed, query_heads=query_heads, resume=(out / "run.json").is_file(),
                           threads=args.threads)
    t0 = time.perf_counter()
    if not finished(out, config.evaluations):  # front.json is written every generation: not a sign of the end
        run_search(config, model=model, tokenizer=tok)
    search_s = time.perf_counter() - t0
    run = Run(out)
    subnet, rid = front_member(out, ratio)
    scored = run.table().set_index("id").loc[rid]
    plan = run.ranking().resolve(subnet)
    m = reform_model(model, plan, calib, "admm", subnet)
    space = run_space(run, model)
    row = {"run": str(out), "command": run.settings().get("command"), "search_s": round(search_s, 1),
            "objective_s": round(objective_seconds(out), 1),
            "space": run.settings().get("space"), "pick": rid, "source": str(scored.get("source")),
            "params_ratio": space.ratio(subnet), "valid_perplexity_reformed": float(scored["perplexity_reformed"]),
            "test_ppl": perplexity(m, windows, batch_size=1), "subnet": subnet.to_dict(), **cut_counts(space, subnet)}
    saved.write_text(json.dumps(row, indent=1))
    return row


def objective_seconds(out: Path) -> float:
    """Objective time the run's journal records (all sessions of a resumed search, unlike ``search_s``)."""
    lines = (out / "evaluations.jsonl").read_text().splitlines()
    return sum(float(json.loads(x).get("time_s") or 0.0) for x in lines if x.strip())


def run_space(run, model):
    from search_spaces import SubnetSpace

    s = run.settings()
    return SubnetSpace.from_model(model, int(s.get("granularity") or 64), bool(s.get("allow_layer_drop", True)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.9])
    p.add_argument("--runs", default="runs", help="folder of the search runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--windows", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads of the searches (0: the cores the load leaves free, "
                   "which counts this process's own previous search: pass 2 on an otherwise idle 2-core machine)")
    p.add_argument("--no-write", action="store_true", help="raw JSON only; RESULTS.md untouched")
    args = p.parse_args(argv)
    from benchmarks.quality import PROTOCOLS, setup
    from nas_llm.model.data import eval_windows

    model, tok, _, calib, _ = setup(PROTOCOLS["main"])
    windows = eval_windows(tok, "wikitext2-test", seq_len=2048, max_windows=args.windows)
    raw = RAW_DIR / "query_heads.json"  # rows of ratios measured earlier (another session, a fresh checkout) are kept
    rows = dict(json.loads(raw.read_text())["rows"]) if raw.is_file() else {}
    for r in args.ratios:
        for qh in (True, False):
            key = f"{r:g}-{'on' if qh else 'off'}"
            rows[key] = one(r, qh, args, model, tok, calib, windows)
            print(f"[query-heads] {key}: test ppl {rows[key]['test_ppl']:.2f}, query heads cut {rows[key]['query_heads_cut']}", flush=True)
    info = machine()
    data = {"machine": info, "command": command_line(), "rows": rows}
    save_raw("query_heads", data)
    md = [header("Query heads inside KV groups on vs off (issue 17)", info, command_line()),
          "Same search per ratio (perplexity_reformed vs params_ratio in the band, 96 evaluations, 8 x 2048 tokens, seed "
          f"{args.seed}); pick ADMM-reformed on 32 x 256 WikiText-2 valid; WikiText-2 test {args.windows} x 2048.\n",
          "| ratio | query heads | pick params | valid ppl (reformed) | test ppl | query heads cut (inside groups) | KV groups cut | "
          "layers with a head cut | search (this call) | objective time (journal) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in sorted(rows.items(), key=lambda kv: (float(kv[0].split("-")[0]), kv[0].endswith("off"))):
        ratio, mode = k.split("-")
        md.append(f"| {float(ratio):.0%} | {mode} | {r['params_ratio']:.4f} | {r['valid_perplexity_reformed']:.2f} | {r['test_ppl']:.2f} | "
                  f"{r['query_heads_cut']} ({r['query_heads_cut_inside_groups']}) | {r['kv_groups_cut']} | "
                  f"{r['layers_with_query_head_cuts']} | {r['search_s'] / 60:.1f} min | {r['objective_s'] / 60:.1f} min |")
    md += ["", "Commands (a ratio not rerun keeps its row from the raw JSON, measured earlier):", ""] + [f"- `{r['command']}`" for r in rows.values()]
    print("\n".join(md))
    if not args.no_write:
        write_section("query_heads", "\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

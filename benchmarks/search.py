"""Search benchmark on SmolLM2 (issue 5): importance-initialised NSGA-II vs random search at equal evaluations.

    flock /tmp/nasllm-heavy.lock python benchmarks/search.py --evaluations 200

Runs ``run_search`` twice (pymoo NSGA-II with the importance-initialised first generation ->
``runs/smollm2-demo``; pure random search -> ``runs/smollm2-random``) with the same objectives
(calibration perplexity + latency_lut), the same screening fidelity and the same budget, then
compares hypervolumes at a stated reference point and places the uniform baselines against the
front. ``--reuse`` analyses existing run folders without searching again.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import command_line, header, machine, save_raw, write_section  # noqa: E402


def _search(out: Path, driver: str, args: argparse.Namespace) -> dict:
    from nas_llm.search import SearchConfig, run_search

    config = SearchConfig(out=str(out), model="smollm2-135m", driver=driver, objectives=args.objectives,
                          evaluations=args.evaluations, pop_size=args.pop_size, seed=args.seed, screen=args.screen,
                          ppl_samples=args.ppl_samples, ppl_seq_len=args.ppl_seq_len, importance=args.importance,
                          progress=False, resume=(out / "run.json").is_file())
    run_search(config)
    return json.loads((out / "run.json").read_text())


def _hv(df: pd.DataFrame, names: list[str], ref) -> float:
    from nas_llm.front import hypervolume
    from nas_llm.front import eligible as front_eligible

    ok = front_eligible(df)
    return hypervolume(df.loc[ok, names].to_numpy(float), ref) if ok.any() else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evaluations", type=int, default=200)
    ap.add_argument("--pop-size", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--screen", type=float, default=0.25)
    ap.add_argument("--ppl-samples", type=int, default=8)
    ap.add_argument("--ppl-seq-len", type=int, default=256)
    ap.add_argument("--objectives", default="perplexity,latency_lut")
    ap.add_argument("--importance", default="wanda", choices=("obs", "magnitude", "wanda", "flap"),
                    help="ranking for the importance-initialised run (wanda: measured stronger than OBS on SmolLM2)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "smollm2-demo"))
    ap.add_argument("--random-out", default=str(ROOT / "runs" / "smollm2-random"))
    ap.add_argument("--reuse", action="store_true", help="analyse existing run folders only")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    out, rout = Path(args.out), Path(args.random_out)
    ppl_impl = "objectives.perplexity"
    if not args.reuse:
        _search(out, "pymoo", args)
        _search(rout, "random", args)
    s_n, s_r = json.loads((out / "run.json").read_text()), json.loads((rout / "run.json").read_text())
    names = [o["name"] for o in s_n["objectives"]]
    t_n = pd.read_csv(out / "evaluations.csv")
    t_r = pd.read_csv(rout / "evaluations.csv")
    n_eq = min(len(t_n), len(t_r))
    t_n, t_r = t_n[t_n["id"] < n_eq], t_r[t_r["id"] < n_eq]

    dense = t_n[t_n["source"] == "dense"].iloc[0]
    refs = {
        "ref A (3x dense perplexity, dense latency)": [3 * float(dense[names[0]]), float(dense[names[1]])],
        "ref B (10x dense perplexity, 1.1x dense latency)": [10 * float(dense[names[0]]), 1.1 * float(dense[names[1]])],
        "ref D (100x dense perplexity, 1.1x dense latency)": [100 * float(dense[names[0]]), 1.1 * float(dense[names[1]])],
    }
    hv = {k: {"nsga2": _hv(t_n, names, r), "random": _hv(t_r, names, r), "reference_point": r} for k, r in refs.items()}
    # C: log(perplexity) vs latency, reference = nadir of both runs' full-fidelity points + 10% (a finite ratio
    # even when random search never gets near the dense model)
    from nas_llm.front import reference_point
    from nas_llm.front import eligible as _fe

    def logged(df):
        d = df[_fe(df)][names].to_numpy(float).copy()
        d[:, 0] = np.log(d[:, 0])
        return d

    both = np.vstack([logged(t_n), logged(t_r)])
    ref_c = reference_point(both).tolist()
    from nas_llm.front import hypervolume as _hvf

    hv["ref C (log perplexity, latency; nadir of both runs + 10%)"] = {
        "nsga2": _hvf(logged(t_n), ref_c), "random": _hvf(logged(t_r), ref_c), "reference_point": ref_c}
    for v in hv.values():
        v["ratio"] = v["nsga2"] / v["random"] if v["random"] > 0 else float("inf")

    # store the stated reference point in both run folders so hypervolume.csv is readable (the search's
    # default reference, the nadir of generation 0, is dominated by broken subnets with perplexity ~1e10)
    from nas_llm.run import Run
    from nas_llm.search.result import SearchResult

    ref_a = list(refs.values())[0]
    for folder, s_ in ((out, s_n), (rout, s_r)):
        full = pd.read_csv(folder / "evaluations.csv")
        SearchResult.from_rows(full.to_dict("records"), names, [o["direction"] for o in s_["objectives"]], ref_a).save(Run(folder))

    # where the uniform baselines fall: best front perplexity at equal or lower latency
    from nas_llm.front import pareto_mask
    from nas_llm.front import eligible as front_eligible

    ok = front_eligible(t_n)
    front = t_n[ok & pareto_mask(t_n[names].to_numpy(float), feasible=ok)]
    base_rows = []
    for _, r in t_n[(t_n["source"].isin(["dense", "uniform"])) | t_n["source"].str.startswith("baseline")].iterrows():
        if r["fidelity"] < 1:
            continue
        better = front[(front[names[1]] <= r[names[1]])]
        best = float(better[names[0]].min()) if len(better) else float("nan")
        base_rows.append({"id": int(r["id"]), "source": r["source"], "params_ratio": round(float(r["params_ratio"]), 3),
                          names[0]: float(r[names[0]]), names[1]: float(r[names[1]]),
                          "on_front": bool(r["id"] in set(front["id"])),
                          f"front {names[0]} at <= latency": best, "ratio": best / float(r[names[0]])})
    base = pd.DataFrame(base_rows).sort_values(names[1]) if base_rows else pd.DataFrame()

    info = machine()
    raw = {"perplexity_implementation": ppl_impl, "machine": info, "command": command_line(), "evaluations": n_eq, "objectives": names,
           "nsga2": {"wall_s": s_n.get("wall_s"), "n_calls": s_n.get("n_calls"), "front_size": int(len(front)),
                     "settings": {k: s_n[k] for k in ("pop_size", "screen_fidelity", "seed", "objective_args") if k in s_n}},
           "random": {"wall_s": s_r.get("wall_s"), "n_calls": s_r.get("n_calls"),
                      "best_perplexity": float(t_r.loc[_fe(t_r), names[0]].min())},
           "hypervolume": hv, "baselines": base_rows,
           "front": front[["id", *names, "params_ratio", "source"]].to_dict("records")}
    save_raw("search", raw)

    def f(x, d=3):
        return "n/a" if x is None else f"{x:.{d}g}"

    wall_n, wall_r = s_n.get("wall_s"), s_r.get("wall_s")
    lines = [header("Search (issue 5): importance-initialised NSGA-II vs random search, SmolLM2-135M, CPU", info, command_line()), ""]
    lines += [f"Objectives: {', '.join(names)} (both minimised). Perplexity: {s_n.get('objective_args', {}).get('perplexity')} "
              f"on the WikiText-2 *validation* split ({ppl_impl}); screening fidelity {s_n.get('screen_fidelity')} "
              f"(every candidate), full fidelity for the first non-dominated front and the baselines. "
              f"Population {s_n.get('pop_size')}, seed {s_n.get('seed')}. Hypervolume on full-fidelity feasible points "
              f"(pymoo HV), at equal evaluations ({n_eq} each).", ""]
    lines += ["| run | evaluations | wall time | evaluations/min | objective calls | front size |", "|---|---|---|---|---|---|"]
    lines.append(f"| NSGA-II, importance init (`{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}`) | {n_eq} | "
                 f"{f(wall_n / 60 if wall_n else None)} min | {f(n_eq / (wall_n / 60) if wall_n else None)} | {s_n.get('n_calls')} | {len(front)} |")
    lines.append(f"| random search | {n_eq} | {f(wall_r / 60 if wall_r else None)} min | {f(n_eq / (wall_r / 60) if wall_r else None)} | {s_r.get('n_calls')} | |")
    lines += ["", f"Best full-fidelity perplexity found: NSGA-II {f(float(front[names[0]].min()), 4)} (the dense model), "
              f"below 2x dense at {f(float(front.loc[front[names[0]] <= 2 * float(dense[names[0]]), names[1]].min()), 4)} ms; "
              f"random search {f(raw['random']['best_perplexity'], 4)} (random per-layer widths average a ~0.5 ratio).",
              "", "| reference point (perplexity, latency ms) | HV NSGA-II | HV random | ratio (goal >= 1.2) |", "|---|---|---|---|"]
    for k, v in hv.items():
        lines.append(f"| {k}: ({f(v['reference_point'][0], 4)}, {f(v['reference_point'][1], 4)}) | {f(v['nsga2'], 4)} | "
                     f"{f(v['random'], 4)} | {f(v['ratio'])} |")
    if len(base):
        lines += ["", "Uniform baselines vs the front (ratio = best front perplexity at equal or lower latency / baseline perplexity; < 1 means the front wins):", "",
                  "| source | params ratio | perplexity | latency ms | on front | front ppl at <= latency | ratio |", "|---|---|---|---|---|---|---|"]
        for _, r in base.iterrows():
            lines.append(f"| {r['source']} | {r['params_ratio']} | {f(r[names[0]], 4)} | {f(r[names[1]], 3)} | "
                         f"{'yes' if r['on_front'] else 'no'} | {f(r[f'front {names[0]} at <= latency'], 4)} | {f(r['ratio'])} |")
    met = [k.split(" (")[0] for k, v in hv.items() if v["ratio"] >= 1.2]
    missed = [f"{k.split(' (')[0]} ({v['ratio']:.2f})" for k, v in hv.items() if v["ratio"] < 1.2]
    lines += ["", f"**Reading.** Wall time goal (<= 10 min for {n_eq} evaluations): "
              f"{'met' if wall_n and wall_n <= 600 else 'missed'} ({f(wall_n / 60 if wall_n else None)} min for the run as "
              f"recorded in its run.json; in this session's run that included building the latency lookup table (~40 s, "
              f"once per device, cached on disk afterwards) and re-scoring the uniform/drop-last seeds for the table above). Hypervolume goal (>= 1.2): met at {', '.join(met) or 'no reference point'}; "
              f"missed at {', '.join(missed) or 'none'}. Where the reference admits only usable subnets (perplexity "
              f"<= 10x dense) random search finds little or nothing; the wider references also count the region of "
              f"perplexities 10-100x dense and above, where random search's many small subnets fill the low-latency "
              f"corner that the importance-initialised population (seeded at >= 40 % params) reaches less often."]
    write_section("search", "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Search speed (issue 18): a search that beats uniform at 80-90% and runs in minutes.

Three measurements, each its own subcommand (raw JSON in ``results/search_speed-*.json``; ``--no-write``
leaves RESULTS.md alone, for smokes):

    # objective time per evaluation against the FLOP-count limit (single-core fp32 GEMM throughput)
    python benchmarks/search_speed.py flops --threads 1
    # bfloat16 screening against float32 on >= 30 candidates inside the 80% band (Spearman, largest difference)
    python benchmarks/search_speed.py bf16 --candidates 30
    # the 2048-token 80% search (96 evaluations) with today's defaults; wall time, the pick against uniform,
    # how the pick was made (source tag: alloc / alloc-mut = descends from the allocation seeds)
    flock /tmp/nasllm-heavy.lock python benchmarks/search_speed.py search --ratio 0.8 --out runs/s80
    python benchmarks/search_speed.py report runs/s80 runs/s80s1 runs/s90     # table from finished run folders
    # what other promotion rules would have cost on finished runs (exact replay: the offspring do not depend on them)
    python benchmarks/search_speed.py replay runs/s80-0 runs/s80-1

The search's other settings are those of runs r80L/r90L (RESULTS.md "Search cost"): ``--objectives
perplexity_reformed,params_ratio --constraint "params_ratio in [r-0.015,r+0.015]" --no-layer-drop --importance
wanda --evaluations 96 --pop-size 16 --ppl-samples 8 --ppl-seq-len 2048``, plus ``--screen 0.125`` (one window).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._results import command_line, header, machine, save_raw, write_section  # noqa: E402


def search_config(ratio: float, out: str, seed: int = 0, band: tuple[float, float] | None = None, **kw):
    """The r80L/r90L search at ``ratio`` with today's speed settings (``kw`` overrides any field); ``band``: the
    params-ratio constraint (default ``ratio +- 0.015``)."""
    from nas_llm.search import SearchConfig

    lo, hi = band or (ratio - 0.015, ratio + 0.015)
    base = dict(out=out, objectives=["perplexity_reformed", "params_ratio"], seed=seed,
                constraints=[f"params_ratio in [{lo:.4f},{hi:.4f}]"], allow_layer_drop=False,
                importance="wanda", evaluations=96, pop_size=16, ppl_samples=8, ppl_seq_len=2048, screen=0.125,
                progress=False)
    return SearchConfig(**{**base, **kw})


def uniform_band(model, ratio: float, width: float = 0.03) -> tuple[float, float]:
    """``[u - width, u]`` with ``u`` the params ratio of uniform Wanda-sp's subnet at ``ratio`` (the MLP-only uniform
    subnet nearest it): every pick then has equal or fewer decoder params than the baseline it is compared with."""
    from search_spaces import SubnetSpace

    space = SubnetSpace.from_model(model, granularity=64, allow_layer_drop=False)
    u = space.ratio(space.uniform_at_ratio(ratio, "mlp"))
    return round(u - width, 4), round(u, 4)


def problem(config, threads: int):
    """The search problem of ``config`` set up as a search would (model, ranking, Grams, prefix cache)."""
    import torch

    from nas_llm import load_model
    from nas_llm.run import Run
    from nas_llm.search.runner import build_problem

    torch.set_num_threads(threads)
    model, tok = load_model(config.model)
    sp = build_problem(config, Run(config.out), model, tok)
    sp.setup()
    return sp


# -- FLOPs ------------------------------------------------------------------------------------------------
def eval_flops(space, subnet, n: int, L: int, start: int = 0) -> float:
    """FLOPs of scoring ``subnet`` on ``n x L`` tokens from decoder layer ``start`` on: projections, causal
    attention (QK^T and AV over the L(L+1)/2 visible pairs), MLP and the LM head; norms and softmax left out."""
    d = space.dims
    T, pairs = n * L, n * L * (L + 1) / 2
    total = 2.0 * n * (L - 1) * d.hidden * d.vocab  # LM head on every predicted token
    for c in subnet.layers[start:]:
        if not c.keep:
            continue
        q_out, kv_out = c.kv_groups * (c.heads_per_group or d.q_per_group) * d.head_dim, c.kv_groups * d.head_dim
        total += 2.0 * T * d.hidden * (2 * q_out + 2 * kv_out)  # q, k, v, o
        total += 2 * 2.0 * pairs * q_out  # QK^T and AV, per head head_dim each
        total += 2.0 * T * 3 * d.hidden * c.neurons  # gate, up, down
    return total


def gemm_throughput(threads: int, m: int = 2048, k: int = 576, n: int = 1536) -> float:
    """fp32 GEMM FLOP/s of this CPU with ``threads`` threads (torch.utils.benchmark, a decoder-shaped product)."""
    import torch
    import torch.utils.benchmark as tb

    a, b = torch.randn(m, k), torch.randn(k, n)
    t = tb.Timer("a @ b", globals={"a": a, "b": b}, num_threads=threads).blocked_autorange(min_run_time=2.0)
    return 2.0 * m * k * n / t.median


def flops_cmd(args) -> dict:
    """Objective time per full-fidelity evaluation (refit excluded and included) against FLOPs / GEMM throughput."""
    from nas_llm.search.population import mutate

    config = search_config(args.ratio, str(ROOT / "runs" / "_speed_flops"), alloc=False)
    sp = problem(config, args.threads)
    obj = sp.objectives[0]
    rng = np.random.default_rng(0)
    u = sp.space.uniform_at_ratio(args.ratio, "mlp")
    subnets = [u] + [mutate(sp.space, u, rng, p=0.5) for _ in range(args.subnets - 1)]
    peak = gemm_throughput(args.threads)
    rows = []
    for s in subnets:
        t0 = time.perf_counter()
        obj.weights_for(sp.ctx.plan(s), 0, sp.ctx)  # the refit (cold for every new width)
        refit = time.perf_counter() - t0
        t0 = time.perf_counter()
        obj.score(s, sp.ctx)
        fwd = time.perf_counter() - t0
        f = eval_flops(sp.space, s, obj.rows, obj.seq_len, obj.last.get("start", 0))
        rows.append({"subnet": s.key(), "params_ratio": sp.space.ratio(s), "start_layer": obj.last.get("start", 0),
                     "flops": f, "limit_s": f / peak, "forward_s": fwd, "refit_s": refit, "ratio_to_limit": fwd / (f / peak)})
    return {"threads": args.threads, "gemm_flops_per_s": peak, "windows": [obj.rows, obj.seq_len], "rows": rows}


def flops_md(r: dict) -> str:
    out = [f"Objective: `perplexity_reformed` at full fidelity ({r['windows'][0]} x {r['windows'][1]} tokens, float32, "
           f"{r['threads']} thread(s)); limit = FLOPs / measured fp32 GEMM throughput "
           f"({r['gemm_flops_per_s'] / 1e9:.1f} GFLOP/s, a 2048x576 @ 576x1536 product, torch.utils.benchmark).", "",
           "| subnet | params ratio | first layer run | GFLOP | limit | forward | ratio to limit | cold refit |", "|---|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        out.append(f"| `{x['subnet'][:24]}...` | {x['params_ratio']:.4f} | {x['start_layer']} | {x['flops'] / 1e9:.0f} | "
                   f"{x['limit_s']:.1f} s | {x['forward_s']:.1f} s | x{x['ratio_to_limit']:.2f} | {x['refit_s']:.2f} s |")
    return "\n".join(out)


# -- bfloat16 screening ---------------------------------------------------------------------------------------
def band_candidates(sp, ratio: float, n: int, seed: int = 0) -> list:
    """``n`` distinct subnets inside the band: mutations of the uniform subnet (what a first generation holds)."""
    from nas_llm.search.population import mutate

    lo, hi = ratio - 0.015, ratio + 0.015
    rng = np.random.default_rng(seed)
    u = sp.space.uniform_at_ratio(ratio, "mlp")
    out, seen = [u], {u.key()}
    while len(out) < n:
        s = mutate(sp.space, out[int(rng.integers(len(out)))], rng, p=0.3)
        if s.key() not in seen and lo <= sp.space.ratio(s) <= hi:
            seen.add(s.key())
            out.append(s)
    return out


def bf16_cmd(args) -> dict:
    """Screening values of the same candidates in bfloat16 and float32 (same windows, same refit)."""
    from scipy.stats import spearmanr

    config = search_config(args.ratio, str(ROOT / "runs" / "_speed_bf16"), alloc=False, ppl_samples=args.windows,
                           ppl_seq_len=args.seq_len, screen=1.0)
    sp = problem(config, args.threads)
    full = sp.objectives[0]
    bf = full.with_windows(full.n_samples, full.seq_len, dtype="bfloat16")
    bf.batch_size = full.batch_size  # the same batches, the same prefix cache: only the dtype differs
    rows = []
    for s in band_candidates(sp, args.ratio, args.candidates):
        t0 = time.perf_counter()
        v32 = full.score(s, sp.ctx)
        t32 = time.perf_counter() - t0
        t0 = time.perf_counter()
        v16 = bf.score(s, sp.ctx)
        rows.append({"subnet": s.key(), "fp32": v32, "bf16": v16, "fp32_s": t32, "bf16_s": time.perf_counter() - t0})
    a, b = np.array([r["fp32"] for r in rows]), np.array([r["bf16"] for r in rows])
    return {"threads": args.threads, "windows": [args.windows, args.seq_len], "rows": rows,
            "spearman": float(spearmanr(a, b).statistic), "max_rel_diff": float(np.max(np.abs(b - a) / a)),
            "mean_rel_diff": float(np.mean((b - a) / a)),
            "speedup": float(sum(r["fp32_s"] for r in rows) / sum(r["bf16_s"] for r in rows))}


def bf16_md(r: dict) -> str:
    return (f"{len(r['rows'])} candidates inside the band (mutations of the uniform subnet), `perplexity_reformed` on "
            f"{r['windows'][0]} x {r['windows'][1]} tokens, {r['threads']} thread(s): **Spearman {r['spearman']:.4f}**, "
            f"largest relative difference {100 * r['max_rel_diff']:.3f}% (mean {100 * r['mean_rel_diff']:+.3f}%), "
            f"bfloat16 x{r['speedup']:.2f} faster.")


# -- the search -----------------------------------------------------------------------------------------------
def search_cmd(args) -> dict:
    from nas_llm import load_model
    from nas_llm.search import run_search

    out = Path(args.out)
    model, tok = load_model("smollm2-135m")
    band = uniform_band(model, args.ratio) if args.band == "uniform" else None
    rule = {k: v for k, v in (("halving", args.halving), ("rung_step", args.rung_step),
                              ("sens_points", args.sens_points), ("sens_samples", args.sens_samples),
                              ("sens_metric", args.sens_metric), ("evaluations", args.evaluations)) if v is not None}
    config = search_config(args.ratio, str(out), args.seed, band=band, resume=(out / "run.json").is_file(),
                           threads=args.threads, **rule)
    t0 = time.perf_counter()
    run_search(config, model=model, tokenizer=tok)
    return {**summarise(out, args.ratio), "process_s": time.perf_counter() - t0}


def _mlp_only(subnet_json: str, dense_json: str) -> bool:
    """A seed that cuts MLP neurons only (attention and layers as the dense model's): uniform Wanda-sp's shape."""
    d, full = json.loads(subnet_json), json.loads(dense_json)
    heads = d.get("heads_per_group")
    return (d["kv_groups"] == full["kv_groups"] and all(d["keep"])
            and (heads is None or heads == full.get("heads_per_group", heads)))


def summarise(run_dir: Path, ratio: float | None = None) -> dict:
    """Wall time, scoring work and the pick (lowest search value within 0.015 of the ratio) of a finished run."""
    import pandas as pd

    from benchmarks.quality import front_member

    s = json.loads((run_dir / "run.json").read_text())
    df = pd.read_csv(run_dir / "evaluations.csv")
    band = next(c for c in s["constraints"] if c["objective"] == "params_ratio")
    ratio = ratio if ratio is not None else (band["lo"] + band["hi"]) / 2
    n = int(s["objective_args"]["perplexity_reformed"]["n_samples"])
    rungs = sorted(float(c.split("@")[1]) for c in df.columns if c.startswith("perplexity_reformed@"))
    low = np.zeros(len(df))  # windows scored below full fidelity (one memo: a higher rung reuses a lower one's)
    for f in rungs:
        low = np.where(df[f"perplexity_reformed@{f:g}"].notna(), round(f * n), low)
    top = (df["fidelity"] >= 1) & df["source"].ne("dense")
    windows = {"screen": int(low.sum()), "full": int(top.sum()) * n, "screen_dtype": (s.get("search") or {}).get("screen_dtype")}
    _, pid = front_member(run_dir, ratio)  # the run's own band
    pick = df[df["id"] == pid].iloc[0]
    dense = df[df["source"] == "dense"]["subnet"].iloc[0]
    uni = df[(df["source"] == "uniform") & df["subnet"].map(lambda j: _mlp_only(j, dense))]
    if uni.empty:
        raise SystemExit(f"{run_dir}: no MLP-only uniform seed in the run to compare the pick with")
    # the band's top is uniform Wanda-sp's size (search --band uniform): compare with that seed, not the nearest one
    uni = uni.loc[(uni["params_ratio"] - band["hi"]).abs().idxmin()]
    # a seed the halving never promoted has only its screening value: reported as such, never compared with the pick
    full = bool(uni["fidelity"] >= 1)
    screen_col = f"perplexity_reformed@{rungs[0]:g}" if rungs else None
    return {"run": run_dir.name, "command": s.get("command"), "wall_s": s.get("wall_s"), "evaluations": len(df),
            "objective_calls": s.get("n_calls"), "full_fidelity": int((df["fidelity"] >= 1).sum()),
            "windows": windows, "sensitivity_s": (s.get("alloc") or {}).get("sensitivity_s"),
            "sensitivity_from": (s.get("alloc") or {}).get("sensitivity_from", "measured"),
            "alloc_seeds": (s.get("alloc") or {}).get("seeds"), "threads": s.get("threads"), "setup_s": s.get("setup_s"),
            "pick": {"id": pid, "source": pick["source"], "params_ratio": float(pick["params_ratio"]),
                     "value": float(pick["perplexity_reformed"]), "subnet": json.loads(pick["subnet"])},
            "uniform": {"id": int(uni["id"]), "params_ratio": float(uni["params_ratio"]),
                        "value": float(uni["perplexity_reformed"]) if full else None,
                        "screen_value": float(uni[screen_col]) if screen_col and pd.notna(uni[screen_col]) else None}}


def replay(run_dir: Path, rungs: list[float], eta: int, capped: bool = False) -> dict:
    """Which rows a promotion rule would have taken to each rung of a finished run, and the windows it costs.

    Exact for the run's own rows: NSGA-II selects on the screening column, so the offspring are the same whatever
    the promotion rule (rows a rule promotes that the run did not are listed as ``unknown``: their value there was
    never measured). ``capped``: at most ``ceil(n / eta)`` promotions per rung in all (synchronous halving) instead
    of ASHA's "the best 1/eta now"."""
    import math

    import pandas as pd

    from nas_llm.search.halving import best_fraction

    s = json.loads((run_dir / "run.json").read_text())
    n_win = int(s["objective_args"]["perplexity_reformed"]["n_samples"])
    df = pd.read_csv(run_dir / "evaluations.csv")

    def col(f: float) -> str:
        return "perplexity_reformed" if f >= 1 else f"perplexity_reformed@{f:g}"

    level: dict[int, float] = {}
    for g in sorted(df["generation"].unique()):
        rows = df[df["generation"] <= g]
        for r in rows["id"]:
            level.setdefault(int(r), rungs[0])
        for i, f in enumerate(rungs[:-1]):
            at = rows[rows["feasible"] & rows["id"].map(lambda r: level[int(r)] >= f)]
            if at.empty:
                continue
            F = np.stack([np.log(at[col(f)].to_numpy(float)), at["params_ratio"].to_numpy(float)], 1)
            k = math.ceil(len(at) / eta)
            slots = k - sum(level[int(r)] >= rungs[i + 1] for r in at["id"]) if capped else k
            for j in best_fraction(F, len(at) if capped else k):
                rid = int(at.iloc[j]["id"])
                if slots <= 0:
                    break
                if level[rid] < rungs[i + 1]:
                    level[rid] = rungs[i + 1]
                    slots -= 1 if capped else 0
    measured = {f: set(df.loc[df[col(f)].notna() & (df["fidelity"] >= f - 1e-12), "id"].astype(int)) for f in rungs[1:]}
    counts = {f"{f:g}": sum(v >= f for v in level.values()) for f in rungs[1:]}
    windows = sum((round(b * n_win) - round(a * n_win)) * sum(v >= b for v in level.values())
                  for a, b in zip(rungs, rungs[1:]))
    full = [r for r, v in level.items() if v >= 1]
    known = df[df["id"].isin(full) & (df["fidelity"] >= 1)].sort_values("perplexity_reformed")
    pick = known.iloc[0] if len(known) else None
    done = df[(df["fidelity"] >= 1) & df["feasible"]]  # the run's best feasible full-fidelity row (its pick's pool)
    real_pick = int(done.loc[done["perplexity_reformed"].idxmin(), "id"]) if len(done) else None
    return {"run": run_dir.name, "rungs": rungs, "eta": eta, "capped": capped, "promoted": counts,
            "promotion_windows": int(windows), "unknown": sorted(set(full) - measured[1.0]),
            "best_known_full": None if pick is None else {"id": int(pick["id"]), "value": float(pick["perplexity_reformed"])},
            "run_best_full_id": real_pick, "run_best_promoted": real_pick in full}


# the runs' own rule (eta 4, step 4) first, then today's default (eta 8, step 4), then two rejected ones
REPLAY_RULES = (((0.125, 0.5, 1.0), 4, False), ((0.125, 0.5, 1.0), 8, False), ((0.125, 1.0), 8, False),
                ((0.125, 0.5, 1.0), 4, True))


def replay_md(rows: list[dict]) -> str:
    out = ["Promotion rules replayed on finished runs (the run's own rows; `unknown` = promoted by the rule but never "
           "scored there by the run). The first rule is the runs' own (ASHA, eta 4, rungs x4); the second is the "
           "default since 2026-12-07 (`--halving 8 --rung-step 4`); the baseline re-scores at the end of a run come on "
           "top of every rule.", "",
           "| run | rungs | eta | capped | promoted per rung | promotion windows | run's best full row promoted | unknown rows |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| `{r['run']}` | {', '.join(f'{f:g}' for f in r['rungs'])} | {r['eta']} | {'yes' if r['capped'] else 'no'} | "
                   f"{', '.join(f'{k}: {v}' for k, v in r['promoted'].items())} | {r['promotion_windows']} | "
                   f"{'yes' if r['run_best_promoted'] else 'NO'} (id {r['run_best_full_id']}) | {len(r['unknown'])} |")
    return "\n".join(out)


def search_md(rows: list[dict]) -> str:
    out = ["Search value = validation `perplexity_reformed` (8 x 2048 tokens); test perplexity after reformation is the "
           "quality table's job (`benchmarks/quality.py --run RATIO=RUN`).", "",
           "| run | wall (+ set-up) | evaluations | full-fidelity rows | windows scored (screening + full) | sensitivity | threads | pick (source) | "
           "pick ratio | pick value | uniform value | pick / uniform |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, u = r["pick"], r["uniform"]
        src = r.get("sensitivity_from") or "measured"  # from the shared cache: measured by an earlier run
        sens = f"{r['sensitivity_s'] or 0:.0f} s" + ("" if src == "measured" else f" ({src})")
        out.append(f"| `{r['run']}` | {r['wall_s'] / 60:.1f} min (+{(r['setup_s'] or 0) / 60:.1f}) | {r['evaluations']} | "
                   f"{r['full_fidelity']} | "
                   f"{r['windows']['screen']} ({r['windows']['screen_dtype']}) + {r['windows']['full']} | {sens} | {r['threads']} | {p['id']} ({p['source']}) | "
                   f"{p['params_ratio']:.4f} | {p['value']:.2f} | " + (
                       f"{u['value']:.2f} | x{p['value'] / u['value']:.3f} |" if u.get("value") is not None else
                       f"not promoted (screen {u.get('screen_value') or float('nan'):.2f}) | — |"))
    descends = sum(r["pick"]["source"] in ("alloc", "alloc-mut") for r in rows)
    out += ["", f"The pick descends from an allocation seed (source `alloc`/`alloc-mut`) in {descends} of {len(rows)} runs.", "",
            "Commands:", ""] + [f"- `{r['run']}`: `{r['command']}`" for r in rows]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("flops", "bf16", "search", "report", "replay"):
        p = sub.add_parser(name)
        p.add_argument("--ratio", type=float, default=0.8)
        p.add_argument("--threads", type=int, default=1 if name == "flops" else 0)
        p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md and results/ alone")
    sub.choices["flops"].add_argument("--subnets", type=int, default=4)
    sub.choices["bf16"].add_argument("--candidates", type=int, default=30)
    sub.choices["bf16"].add_argument("--windows", type=int, default=1)
    sub.choices["bf16"].add_argument("--seq-len", type=int, default=2048)
    sub.choices["search"].add_argument("--out", required=True)
    sub.choices["search"].add_argument("--seed", type=int, default=0)
    sub.choices["search"].add_argument("--band", choices=("uniform", "centred"), default="uniform",
                                       help="params band: [u - 0.03, u] with u = uniform Wanda-sp's params at --ratio "
                                            "(picks never have more params than it), or --ratio +- 0.015")
    from dataclasses import fields

    from nas_llm.search import SearchConfig

    default = {f.name: f.default for f in fields(SearchConfig)}  # the search's own defaults, never restated here
    sub.choices["search"].add_argument("--halving", type=int, default=None, metavar="ETA",
                                       help=f"promotion share (default: the search's, {default['halving']}); 4 with "
                                            "--rung-step 4 is the rule of the runs before 2026-12-07")
    sub.choices["search"].add_argument("--rung-step", type=int, default=None, metavar="STEP",
                                       help=f"rung ladder factor (default: the search's, {default['rung_step']})")
    sub.choices["search"].add_argument("--sens-points", type=int, default=None, metavar="N",
                                       help="measured widths per layer in the sensitivity table (default: the "
                                            f"search's, {default['sens_points']}); 2 is the setting of the runs "
                                            "before 2026-12-07 03:30 UTC")
    sub.choices["search"].add_argument("--sens-samples", type=int, default=None, metavar="N",
                                       help=f"sensitivity windows (default: the search's, {default['sens_samples']}); 8 is "
                                            "the setting of the runs before 2026-12-07 07:15 UTC")
    sub.choices["search"].add_argument("--sens-metric", choices=("kl", "nll"), default=None,
                                       help=f"sensitivity metric (default: the search's, {default['sens_metric']}); nll is "
                                            "the setting of the runs before 2026-12-07 07:15 UTC")
    sub.choices["search"].add_argument("--evaluations", type=int, default=None, metavar="N",
                                       help="distinct subnets to score (default: 96, the issue's 80 %% search)")
    sub.choices["report"].add_argument("runs", nargs="+", type=Path)
    sub.choices["replay"].add_argument("runs", nargs="+", type=Path)
    args = ap.parse_args(argv)
    if args.cmd in ("flops", "bf16") and args.threads <= 0:
        from nas_llm.search.runner import free_cores

        args.threads = free_cores()
    result = {"flops": flops_cmd, "bf16": bf16_cmd, "search": search_cmd,
              "report": lambda a: {"runs": [summarise(r) for r in a.runs]},
              "replay": lambda a: {"rows": [replay(r, list(rg), eta, cap) for r in a.runs for rg, eta, cap in REPLAY_RULES]},
              }[args.cmd](args)
    md = {"flops": flops_md, "bf16": bf16_md, "search": lambda r: search_md([r]),
          "report": lambda r: search_md(r["runs"]), "replay": lambda r: replay_md(r["rows"])}[args.cmd](result)
    print(md)
    if not args.no_write:
        info = machine()
        save_raw(f"search_speed-{args.cmd}", {"machine": info, "command": command_line(), **result})
        write_section(f"search_speed_{args.cmd}", header(f"Search speed: {args.cmd} (issue 18)", info, command_line()) + "\n" + md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

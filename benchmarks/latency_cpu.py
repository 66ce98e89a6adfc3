"""Issue 3 CPU benchmark on SmolLM2-135M (fp32): predictors vs measurement, perplexity cost, timing noise.

(a) lookup-table (and roofline) predictor vs measured latency of 20 random subnets, prefill
    (batch 1 x --seq tokens) and decode per token (after a --seq prompt): Spearman and MAPE;
(b) perplexity-evaluation cost per candidate, fast path (prefix cache + sliced layers) relative
    to the naive masked full forward on the same tokens, with the largest difference of the values;
(c) one subnet measured --repeats times back to back: spread of the medians.

(a) and (c) read every timing two ways from the same blocks: the median block of each round
(``stat="median"``) and the fastest block (``stat="min"``); (a) builds one table per way.

Run it alone: ``flock /tmp/nasllm-heavy.lock python benchmarks/latency_cpu.py``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--n-subnets", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ppl-subnets", type=int, default=6)
    ap.add_argument("--ppl-samples", type=int, default=8)
    ap.add_argument("--ppl-seq", type=int, default=128)
    ap.add_argument("--ppl-repeats", type=int, default=3, help="interleaved fast/naive timing pairs per subnet (median)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--repeat-time", type=float, default=1.5, help="seconds of timed calls per measurement in (c)")
    ap.add_argument("--skip", default="", help="comma list of parts to skip: a,b,c")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from _results import command_line, header, machine, save_raw, write_section
    from latency_gpu import sample_spread

    from nas_llm import load_model
    from nas_llm.model.slicing import slice_model
    from objectives import Context
    from objectives.latency import mape, measure_interleaved, measure_latency, spearman
    from objectives.perplexity import Perplexity
    from objectives import LookupTablePredictor, RooflinePredictor, checked_predict
    from search_spaces import Ranking, SubnetSpace

    t0 = time.time()
    model, tok = load_model("smollm2-135m")
    space = SubnetSpace.from_model(model)
    d = space.dims
    rank = Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate)
    rng = np.random.default_rng(0)
    info = machine()
    res: dict = {"machine": info, "threads": args.threads, "seq": args.seq, "command": command_line()}
    skip = set(args.skip.split(","))
    md = [header("Latency objectives on CPU (issue 3): SmolLM2-135M fp32", info, command_line()),
          f"torch threads {args.threads}; no other job ran on the 2-core machine, but it is a VM whose speed drifts "
          f"(see (c)).\n"]

    if "a" not in skip:
        subs = [sample_spread(space, rng) for _ in range(args.n_subnets)]
        res["a"] = {"subnets": [s.to_dict() for s in subs], "ratios": [space.ratio(s) for s in subs]}
        md.append(f"### (a) predictors vs measurement, {len(subs)} random subnets (decoder param ratio "
                  f"{min(res['a']['ratios']):.2f}-{max(res['a']['ratios']):.2f}; per-subnet scale f~U(0.3,1), "
                  f"per-layer widths f x U(0.7,1.3), layer drop prob 0.25(1-f))\n")
        md.append("Measured: median over "
                  f"{args.rounds} interleaved rounds (`blocked_autorange`, 0.2 s each) of each round's median block "
                  "(stat median) or fastest block (stat min); the `lut` of each stat is a table built with that stat, "
                  "`roofline` is compared with both.\n")
        md.append("| mode | stat | predictor | Spearman | MAPE % | table build s | dense measured ms | dense IQR ms |\n"
                  "|---|---|---|---|---|---|---|---|")
        for mode in ("prefill", "decode"):
            luts, build_s = {}, {}
            for stat in ("median", "min"):
                tb = time.time()
                luts[stat] = LookupTablePredictor(mode=mode, seq_len=args.seq, rounds=args.rounds, min_run_time=0.1,
                                                  refresh=True, progress=False, stat=stat)
                luts[stat].setup(model)
                build_s[stat] = time.time() - tb
            roof = RooflinePredictor(mode=mode, seq_len=args.seq)
            roof.setup(model)
            builders = {f"s{i}": (lambda s=s: slice_model(model, rank.resolve(s))) for i, s in enumerate(subs)}
            builders["dense"] = lambda: model
            meas = measure_interleaved(builders, mode, 1, args.seq, rounds=args.rounds, min_run_time=0.2, progress=False)
            row = {"iqr_s": [meas[f"s{i}"].iqr_s for i in range(len(subs))], "dense": meas["dense"].to_dict(),
                   "lut_build_s": build_s, "lut_table": {k: v.table for k, v in luts.items()}, "peaks": roof.peaks}
            for stat in ("median", "min"):
                m = [_read(meas[f"s{i}"], stat) for i in range(len(subs))]
                row[stat] = {"measured_s": m}
                for pn, p in (("lut", luts[stat]), ("roofline", roof)):
                    pr = [checked_predict(p, s) for s in subs]
                    row[stat][pn] = {"pred_s": pr, "spearman": spearman(pr, m), "mape": mape(pr, m)}
                    md.append(f"| {mode} | {stat} | {pn} | {row[stat][pn]['spearman']:.3f} | {row[stat][pn]['mape']:.1f} | "
                              f"{build_s[stat] if pn == 'lut' else 0:.0f} | {_read(meas['dense'], stat) * 1e3:.2f} | "
                              f"{meas['dense'].iqr_s * 1e3:.2f} |")
            res["a"][mode] = row
            save_raw("latency_cpu", res)
            print(mode, {(st, pn): (row[st][pn]["spearman"], row[st][pn]["mape"]) for st in ("median", "min")
                         for pn in ("lut", "roofline")}, flush=True)
        pk = res["a"]["prefill"]["peaks"]
        md.append(f"\nRoofline peaks measured here: {pk['flops_per_s'] / 1e9:.0f} GFLOP/s fp32 matmul, "
                  f"{pk['bytes_per_s'] / 1e9:.1f} GB/s copy, {pk['op_overhead_s'] * 1e6:.1f} us per tiny op.\n")

    if "b" not in skip:
        ctx = Context(model, tok, space, rank)
        fast = Perplexity(n_samples=args.ppl_samples, seq_len=args.ppl_seq, batch_size=args.ppl_samples)
        tc = time.time()
        fast.setup(ctx)
        setup_s = time.time() - tc
        subs = [sample_spread(space, rng) for _ in range(args.ppl_subnets)]
        late = space.dense().layers[:15] + sample_spread(space, rng).layers[15:]
        from search_spaces import Subnet

        subs.append(Subnet(tuple(late)))
        rows = []
        pc = fast.prefix_cache(ctx)
        for s in subs:
            tfs, tns = [], []
            for _ in range(args.ppl_repeats):  # interleaved fast/naive pairs: drift hits both alike
                pc.batch_nll.clear()  # no reuse of an earlier score of the same subnet
                ta = time.perf_counter()
                vf = fast.score(s, ctx)
                tfs.append(time.perf_counter() - ta)
                first, start = fast.last["first_changed"], fast.last["start"]
                ta = time.perf_counter()
                vn = fast.naive(s, ctx)
                tns.append(time.perf_counter() - ta)
            tf, tn = statistics.median(tfs), statistics.median(tns)
            rows.append({"ratio": space.ratio(s), "first_changed": first, "start": start, "fast_s": tf, "naive_s": tn,
                         "fast_ppl": vf, "naive_ppl": vn, "rel_diff": abs(vf - vn) / vn})
            print(rows[-1], flush=True)
        ratios = [r["fast_s"] / r["naive_s"] for r in rows]
        res["b"] = {"rows": rows, "setup_s": setup_s, "cost_ratio_median": statistics.median(ratios),
                    "cost_ratio_mean": float(np.mean(ratios)), "max_rel_diff": max(r["rel_diff"] for r in rows)}
        save_raw("latency_cpu", res)
        md.append(f"### (b) perplexity cost per candidate: fast / naive masked full forward\n\n"
                  f"{args.ppl_samples} x {args.ppl_seq} tokens of wikitext2-valid, one batch, median of {args.ppl_repeats} "
                  f"interleaved fast/naive pairs per subnet; cache setup (one dense "
                  f"forward + {len(fast.prefix_cache(ctx).boundaries)} cached boundaries, "
                  f"{fast.prefix_cache(ctx).bytes / 2**20:.0f} MiB) {setup_s:.1f} s once. Last row: a subnet changing only layers >= 15.\n")
        md.append("| params ratio | first changed layer | fast s | naive s | cost ratio | ppl fast | rel. diff |\n|---|---|---|---|---|---|---|")
        for r in rows:
            md.append(f"| {r['ratio']:.2f} | {r['first_changed']} | {r['fast_s']:.2f} | {r['naive_s']:.2f} | "
                      f"{r['fast_s'] / r['naive_s']:.2f} | {r['fast_ppl']:.3f} | {r['rel_diff']:.1e} |")
        md.append(f"\nMedian cost ratio **{res['b']['cost_ratio_median']:.2f}** (mean {res['b']['cost_ratio_mean']:.2f}; "
                  f"goal <= 0.6); largest relative difference to naive {res['b']['max_rel_diff']:.1e}.\n")

    if "c" not in skip:
        s = space.uniform_at_ratio(0.7, mode="both")
        m = slice_model(model, rank.resolve(s))
        out = {}
        md.append(f"### (c) repeat measurement of one subnet (uniform, params ratio {space.ratio(s):.2f})\n\n"
                  f"{args.repeats} back-to-back `measure_latency` calls (`blocked_autorange`, {args.repeat_time} s each), and "
                  f"{args.repeats} back-to-back interleaved measurements of the subnet and the dense model "
                  f"(`measure_interleaved`, one round each): the latency *relative to dense*.\n")
        md.append("Each call read two ways from the same blocks: its median block (stat median) and its fastest block (stat min).\n")
        md.append("| mode | stat | what | values | spread (max-min)/median | mean IQR ms |\n|---|---|---|---|---|---|")

        def spread_of(v):
            return (max(v) - min(v)) / statistics.median(v)

        for mode in ("prefill", "decode"):
            rs = [measure_latency(m, mode, 1, args.seq, min_run_time=args.repeat_time) for _ in range(args.repeats)]
            pairs = [measure_interleaved({"sub": lambda: m, "dense": lambda: model}, mode, 1, args.seq, rounds=1,
                                         min_run_time=args.repeat_time, progress=False) for _ in range(args.repeats)]
            out[mode] = {"iqr_s": [r.iqr_s for r in rs], "n_calls": [r.n_runs for r in rs]}
            for stat in ("median", "min"):
                val = [_read(r, stat) for r in rs]
                rel = [_read(p["sub"], stat) / _read(p["dense"], stat) for p in pairs]
                out[mode][stat] = {"values_s": val, "spread": spread_of(val), "relative_to_dense": rel,
                                   "relative_spread": spread_of(rel)}
                md.append(f"| {mode} | {stat} | ms | {', '.join(f'{x * 1e3:.2f}' for x in val)} | {spread_of(val) * 100:.1f} % | "
                          f"{np.mean([r.iqr_s for r in rs]) * 1e3:.2f} |")
                md.append(f"| {mode} | {stat} | subnet / dense | {', '.join(f'{x:.3f}' for x in rel)} | "
                          f"{spread_of(rel) * 100:.1f} % | |")
            print(mode, out[mode], flush=True)
        res["c"] = out
        save_raw("latency_cpu", res)

    res["elapsed_s"] = time.time() - t0
    save_raw("latency_cpu", res)
    md.append(f"\nTotal benchmark time {res['elapsed_s']:.0f} s. Raw: `benchmarks/results/latency_cpu.json`.")
    md.append(reading(res))
    write_section("latency_cpu", "\n".join(md))
    print("\n".join(md))
    return 0


def _read(r, stat: str) -> float:
    """A measurement read with ``stat``: the median round value, or the median of the rounds' fastest blocks."""
    return r.median_s if stat == "median" else r.fastest_s


def reading(res: dict) -> str:
    """The goals of issue 3 against this run's numbers, and why the misses happen."""
    out = ["\n**Against the goals of issue 3.**"]

    def met(ok: bool) -> str:
        return "met" if ok else "missed"

    if "a" in res:
        parts = []
        for stat in ("median", "min"):
            lut = res["a"]["prefill"][stat]["lut"]
            parts.append(f"stat {stat}: Spearman {lut['spearman']:.3f} ({met(lut['spearman'] >= 0.95)}), "
                         f"MAPE {lut['mape']:.1f} % ({met(lut['mape'] <= 5)})")
        out.append("(a) prefill LUT (goals Spearman >= 0.95, MAPE <= 5 %), " + "; ".join(parts) + ". The table is "
                   "calibrated on the real model (dense vs. half the layers dropped, timed in the same rounds as the "
                   "probe); before that change the same benchmark gave MAPE 9.3 % (quiet machine) and 13.6 % (shared "
                   "machine), with a negative constant term, and the 2026-11-23 run of this script (median only) 6.1 %. "
                   "What is left is mostly the machine: the dense model's round values alone differ by the IQR shown above.")
    if "b" in res:
        b = res["b"]
        out.append(f"(b) median cost ratio {b['cost_ratio_median']:.2f} (goal <= 0.6: "
                   f"{'met' if b['cost_ratio_median'] <= 0.6 else 'missed'}). Random subnets change layer 0, so the "
                   "prefix cache does not help them, and the LM head + cross-entropy over 49 152 tokens (~21 % of "
                   "SmolLM2's FLOPs) is paid in full by every candidate: a subnet at params ratio r cannot cost less than "
                   "about 0.21 + 0.79 r of the naive forward (0.8 at r = 0.75). Subnets that keep the first layers dense "
                   f"(last row) reach {b['rows'][-1]['fast_s'] / b['rows'][-1]['naive_s']:.2f}. On a 7B model the head "
                   "is ~2 % of the FLOPs and the bound becomes ~r.")
    if "c" in res:
        c = res["c"]
        parts = [f"{mode} {stat} {100 * c[mode][stat]['spread']:.1f} %" + (f" ({met(c[mode][stat]['spread'] <= 0.05)})"
                 if mode == "prefill" else "") for mode in ("prefill", "decode") for stat in ("median", "min")]
        out.append("(c) spread of repeated measurements (goal <= 5 %): " + ", ".join(parts) + ". This VM's speed "
                   "drifts on its own: 40 back-to-back forwards of the dense model took 597-748 ms, and a bare "
                   "128 x 576 x 49152 matmul 139-219 ms, in one minute with nothing else running. Which statistic is "
                   "steadier depends on the noise: the fastest block ignores slow outlier blocks, but neither it nor the "
                   "median removes a drift of the whole machine between calls; interleaving (A B A B) and ratios to "
                   "dense remove slow drift but not single-call outliers.")
    return " ".join(out)


if __name__ == "__main__":
    sys.exit(main())

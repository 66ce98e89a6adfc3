"""Deployment in llama.cpp (issue 16): GGUF correctness, speed, the llama.cpp lookup table, and a search against it.

(a) ``--part a``: dense / uniform 80 % (Wanda-sp+ADMM) / our 80 % pick (ours+ADMM) / ours 50 %, rebuilt from
    ``results/quality-main.json`` (same plans, ADMM redone on the same calibration), written as GGUF at f32,
    f16, q8_0, q4_k_m: max |logit difference| to PyTorch on the first window (f32 KV cache, so only the
    weights differ), WikiText-2 test perplexity in llama.cpp (its default f16 KV cache; f32 also with an f32
    cache) next to PyTorch's, and file sizes.
(b) ``--part b``: llama.cpp speed (``--threads``, default 2) of every subnet of the quality table at f16 and
    q4_k_m: prefill tokens/s (512 tokens), decode tokens/s (after ``--context`` tokens), realised / ideal
    speedup (ideal = 1 / decoder-param ratio), beside the PyTorch eager speedups of ``results/latency-cpu-subnets.json``.
(c) ``--part c``: the llama.cpp lookup table (``latency_llamacpp_lut``) vs measurement on 20 random subnets:
    Spearman and MAPE, prefill and decode.
(d) ``--part d``: a search of ``--evaluations`` (>= 200) on perplexity_reformed vs latency_llamacpp_lut, its
    front members in the baselines' size range ADMM-reformed on the quality table's calibration (as the table's
    ``+admm`` rows) and scored on WikiText-2 test; the baselines of the quality table
    (Wanda-sp+ADMM, FLAP, ShortGPT at 90-50 %) placed at their *measured* llama.cpp latency, as are the front
    members: how many baseline points the front dominates, and the latency cut at equal test ppl.

    flock /tmp/nasllm-heavy.lock python benchmarks/deploy_llamacpp.py --part a b c d
    python benchmarks/deploy_llamacpp.py --part a b c d --smoke      # minutes: tiny versions, raw JSON to /tmp, no RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import RAW_DIR, command_line, header, machine, save_raw, unpack_plan, write_section  # noqa: E402

A_MODELS = {"dense": None, "uniform80": "wanda-sp+admm@0.8", "ours80": "ours+admm@0.8", "ours50": "ours+admm@0.5"}
TYPES = ("f32", "f16", "q8_0", "q4_k_m")
BASELINES = ("wanda-sp+admm", "flap", "shortgpt")


# -- shared ----------------------------------------------------------------------------------------
def quality_rows(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"{path} is missing; run benchmarks/quality.py first")
    return json.loads(path.read_text())


def rebuild(row: dict, model, calib):
    """The model of a quality-table row: its plan sliced, reformed as that row was (ADMM / FLAP's bias)."""
    from benchmarks.quality import reform_model
    from nas_llm.model.slicing import slice_model
    from search_spaces import Plan, Subnet

    plan, subnet = Plan.from_dict(unpack_plan(row["plan"])), Subnet.from_dict(row["subnet"])
    return reform_model(model, plan, calib, row["reform"], subnet) if row.get("reform") else slice_model(model, plan, subnet=subnet)


def gguf(m, path: Path, tok, outtype: str) -> Path:
    from nas_llm.model.gguf import export_gguf

    return export_gguf(m, path, tok, outtype=outtype, overwrite=True, check=False)


def out_raw(args, name: str, data: dict) -> None:
    if args.smoke:
        Path(args.smoke_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.smoke_dir) / f"{name}.json").write_text(json.dumps(data, indent=1, default=str))
    else:
        save_raw(name, data)


def publish(args, name: str, md: list[str]) -> None:
    print("\n".join(md))
    if not args.smoke:
        write_section(name, "\n".join(md))


# -- (a) correctness -----------------------------------------------------------------------------
def part_a(args, model, tok, calib) -> dict:
    from nas_llm.model import llamacpp
    from nas_llm.model.data import eval_windows
    from nas_llm.model.metrics import perplexity
    from search_spaces import SubnetSpace

    quality = quality_rows(args.quality)["rows"]
    space = SubnetSpace.from_model(model)
    windows = eval_windows(tok, "wikitext2-test", seq_len=args.seq_len, max_windows=args.windows)
    rows = {}
    for name in args.models:
        key = A_MODELS[name]
        m = model if key is None else rebuild(quality[key], model, calib)
        ids = windows[0, : args.diff_tokens].tolist()
        with torch.no_grad():
            want = m(torch.tensor([ids])).logits[0].numpy()
        row = {"quality_row": key, "params_ratio": 1.0 if key is None else quality[key]["params_ratio"],
               "torch_ppl": perplexity(m, windows, batch_size=1), "types": {}}
        with tempfile.TemporaryDirectory(prefix="gguf-a-") as tmp:
            for t in args.types:
                path = gguf(m, Path(tmp) / f"{name}.{t}.gguf", tok, t)
                exact = llamacpp.open_model(path, n_ctx=args.seq_len, threads=args.threads, f32_kv=True, logits_all=True)
                got = llamacpp.logits(exact, ids)
                cell = {"mib": path.stat().st_size / 2**20, "max_logit_diff": float(np.abs(got - want).max()),
                        "argmax_agree": float((got.argmax(1) == want.argmax(1)).mean())}
                if t == "f32":
                    cell["ppl_f32_kv"] = llamacpp.perplexity(exact, windows.tolist())
                del exact
                served = llamacpp.open_model(path, n_ctx=args.seq_len, threads=args.threads, logits_all=True)
                cell["ppl"] = llamacpp.perplexity(served, windows.tolist())
                del served
                row["types"][t] = cell
                print(f"[gguf a] {name} {t}: {cell['mib']:.0f} MiB, max logit diff {cell['max_logit_diff']:.2e}, ppl {cell['ppl']:.3f} "
                      f"(PyTorch {row['torch_ppl']:.3f})", flush=True)
        rows[name] = row
        del m
    data = {"machine": machine(), "command": command_line(), "settings": _settings(args, "a"), "rows": rows,
            "space": {"dense_params": space.params(space.dense(), decoder_only=False)}}
    out_raw(args, "gguf-correctness", data)
    md = [header("llama.cpp correctness: GGUF logits and perplexity (issue 16 a)", data["machine"], data["command"]),
          f"WikiText-2 test, {args.windows} x {args.seq_len} tokens. Max |logit diff| to the PyTorch model on the first "
          f"{args.diff_tokens} tokens with an f32 KV cache; ppl with llama.cpp's default f16 KV cache (f32 also with an f32 cache).\n",
          "| model | decoder params | PyTorch ppl | " + " | ".join(f"{t} ppl / max diff / MiB" for t in args.types) + " |",
          "|---|---|---|" + "---|" * len(args.types)]
    for name, r in rows.items():
        cells = [f"{c['ppl']:.3f} / {c['max_logit_diff']:.1e} / {c['mib']:.0f}" for c in r["types"].values()]
        md.append(f"| {name} | {100 * r['params_ratio']:.1f}% | {r['torch_ppl']:.3f} | " + " | ".join(cells) + " |")
    publish(args, "gguf-correctness", md)
    return data


# -- (b) speed -------------------------------------------------------------------------------------
def part_b(args, model, tok) -> dict:
    from benchmarks.latency_cpu_subnets import builder, groups
    from objectives.llamacpp import measure_ggufs

    gs = groups(quality_rows(args.quality))
    if args.subnets:
        gs = dict(list(gs.items())[: args.subnets])
    torch_file = RAW_DIR / "latency-cpu-subnets.json"
    eager = json.loads(torch_file.read_text())["rows"] if torch_file.is_file() else {}
    kw = dict(threads=args.threads, rounds=args.rounds, reps=args.reps, n_tokens=args.prefill, n_context=args.context,
              n_decode=args.n_decode)
    rows: dict = {}
    for t in args.speed_types:
        with tempfile.TemporaryDirectory(prefix="gguf-b-") as tmp:
            paths = {"dense": gguf(model, Path(tmp) / "dense.gguf", tok, t)}
            for i, (name, g) in enumerate(gs.items()):
                paths[name] = gguf(builder(model, g)(), Path(tmp) / f"g{i}.gguf", tok, t)
            res = {mode: measure_ggufs(paths, mode, outtype=t, progress=True, **kw) for mode in ("prefill", "decode")}
        for name in paths:
            r = 1.0 if name == "dense" else gs[name]["params_ratio"]
            pf, dc = res["prefill"][name], res["decode"][name]
            sp_p, sp_d = res["prefill"]["dense"].median_s / pf.median_s, res["decode"]["dense"].median_s / dc.median_s
            rows.setdefault(t, {})[name] = {
                "params_ratio": r, "prefill_tok_s": args.prefill / pf.median_s, "decode_tok_s": 1 / dc.median_s,
                "prefill_speedup": sp_p, "decode_speedup": sp_d, "prefill_of_ideal": sp_p * r, "decode_of_ideal": sp_d * r,
                "prefill": pf.to_dict(), "decode": dc.to_dict(),
                "eager_prefill_speedup": (eager.get(name) or {}).get("prefill_speedup"),
                "eager_decode_speedup": (eager.get(name) or {}).get("decode_speedup")}
    data = {"machine": machine(), "command": command_line(), "settings": _settings(args, "b"), "rows": rows}
    out_raw(args, "gguf-speed", data)
    md = [header("llama.cpp speed of the quality table's subnets (issue 16 b)", data["machine"], data["command"]),
          f"{args.threads} threads; prefill of {args.prefill} tokens, decode after {args.context} tokens ({args.n_decode} steps); "
          f"median of {args.rounds} interleaved rounds. of ideal = speedup x decoder-param ratio; eager = PyTorch fp32 "
          "speedup from the CPU latency table above.\n",
          "| type | subnet | params | prefill tok/s | x dense (of ideal) | decode tok/s | x dense (of ideal) | eager prefill / decode |",
          "|---|---|---|---|---|---|---|---|"]
    for t, rs in rows.items():
        for name, r in rs.items():
            e = "/".join(f"{v:.2f}x" if v else "—" for v in (r["eager_prefill_speedup"], r["eager_decode_speedup"]))
            md.append(f"| {t} | {name} | {100 * r['params_ratio']:.1f}% | {r['prefill_tok_s']:.0f} | {r['prefill_speedup']:.2f}x "
                      f"({r['prefill_of_ideal']:.2f}) | {r['decode_tok_s']:.1f} | {r['decode_speedup']:.2f}x ({r['decode_of_ideal']:.2f}) | {e} |")
    publish(args, "gguf-speed", md)
    return data


# -- (c) lookup table ------------------------------------------------------------------------------
def part_c(args, model, tok) -> dict:
    from objectives.llamacpp_lut import LlamaCppLUT, validate_llamacpp
    from objectives.predictors import sample_spread
    from search_spaces import SubnetSpace

    space = SubnetSpace.from_model(model)
    rng = np.random.default_rng(args.seed)
    subs = [sample_spread(space, rng) for _ in range(args.n)]
    modes = {}
    for mode in args.modes:
        lut = LlamaCppLUT(type=args.lut_type, threads=args.threads, mode=mode, n_tokens=args.prefill, n_context=args.context,
                          n_decode=args.n_decode, rounds=args.rounds, reps=args.reps, tokenizer=tok, stat=args.stat,
                          **({"probe_layers": args.probe_layers} if args.probe_layers else {}))
        t0 = time.perf_counter()
        lut.setup(model)
        build_s = time.perf_counter() - t0
        r = validate_llamacpp(model, tok, lut, subs)
        modes[mode] = {**r, "table": str(lut.path), "table_measured": lut.measured, "table_s": round(build_s, 1)}
        print(f"[gguf c] {mode}: Spearman {r['spearman']:.3f}, MAPE {r['mape']:.1f} %", flush=True)
    data = {"machine": machine(), "command": command_line(), "settings": _settings(args, "c"),
            "ratios": [space.ratio(s) for s in subs], "modes": modes}
    name = "gguf-lut" + (f"-probe{args.probe_layers}" if args.probe_layers else "") + ("" if args.stat == "median" else f"-{args.stat}")
    out_raw(args, name, data)
    probe = (f"probe GGUFs of the first {args.probe_layers} layers" if args.probe_layers else "the table's default probes (all layers)") + \
        ("" if args.stat == "median" else f", each round's {args.stat} block")
    md = [header(f"llama.cpp lookup table vs measured (issue 16 c){', ' + str(args.probe_layers) + '-layer probes' if args.probe_layers else ''}"
                 f"{'' if args.stat == 'median' else ', stat ' + args.stat}",
                 data["machine"], data["command"]),
          f"{args.n} random subnets (sizes spread over the space), {args.lut_type}, {args.threads} threads, {probe}; "
          "goal Spearman >= 0.95, MAPE <= 5 %.\n",
          "| mode | Spearman | MAPE | mean signed error | machine vs table build | MAPE anchored at dense | measured range (ms) | table built (s) |",
          "|---|---|---|---|---|---|---|---|"]
    for mode, r in modes.items():
        bias = 100 * float(np.mean([p / m - 1 for p, m in zip(r["pred_s"], r["measured_s"])]))
        md.append(f"| {mode} | {r['spearman']:.3f} | {r['mape']:.1f} % | {bias:+.1f} % | {100 * (r['drift'] - 1):+.1f} % | {r['mape_anchored']:.1f} % | "
                  f"{1e3 * min(r['measured_s']):.2f}-{1e3 * max(r['measured_s']):.2f} | {r['table_s'] if r['table_measured'] else 'cached'} |")
    publish(args, name, md)
    return data


# -- (d) search against llama.cpp latency -------------------------------------------------------------
def part_d(args, model, tok, calib) -> dict:
    from nas_llm.cli import main as cli
    from nas_llm.model.data import eval_windows
    from nas_llm.model.metrics import perplexity
    from benchmarks.quality import reform_model
    from nas_llm.run import Run
    from objectives.llamacpp import measure_ggufs
    from search_spaces import Subnet, SubnetSpace

    run = Run(args.run_dir)
    if not run.exists():
        argv = ["search", "--model", "smollm2-135m", "--out", str(run.path), "--objectives", "perplexity_reformed,latency_llamacpp_lut",
                "--evaluations", str(args.evaluations), "--importance", "wanda", "--no-progress", *args.search_args]
        assert cli(argv) == 0, "search failed"
    df = run.table()
    n_evals = sum(1 for _ in open(run.path / "evaluations.jsonl")) if (run.path / "evaluations.jsonl").is_file() else len(df)
    front = df[df["pareto"].astype(bool)]
    windows = eval_windows(tok, "wikitext2-test", seq_len=args.seq_len, max_windows=args.windows)
    quality = quality_rows(args.quality)["rows"]
    base = {k: v for k, v in quality.items() if k.partition("@")[0] in BASELINES and "plan" in v}
    if args.subnets:
        base = dict(list(base.items())[: args.subnets])
    # front members in the baselines' size range (down to 5 points below the smallest): the others cannot
    # dominate a baseline nor give a latency cut at its perplexity, and each costs an ADMM reformation
    lo = min(float(v["params_ratio"]) for v in base.values()) - 0.05 if base else 0.0
    front = front[front["params_ratio"] >= lo]
    # every reformed member's GGUF and test ppl are kept under the run (part-d/), so an interrupted part d
    # resumes where it stopped instead of redoing an hour of reformations
    work = run.path / "part-d"
    work.mkdir(exist_ok=True)
    done_file = work / f"points-{args.lut_type}-{args.windows}x{args.seq_len}.json"
    done: dict = json.loads(done_file.read_text()) if done_file.is_file() else {}
    points: dict = {}
    with tempfile.TemporaryDirectory(prefix="gguf-d-") as tmp:
        paths = {"dense": gguf(model, Path(tmp) / "dense.gguf", tok, args.lut_type)}
        ranking = run.ranking()
        for _, r in front.iterrows():  # ADMM on the quality table's calibration, as its "+admm" baseline rows
            name, path = f"front:{int(r['id'])}", work / f"f{int(r['id'])}-{args.lut_type}.gguf"
            if name not in done or not path.is_file():
                sub = Subnet.from_json(r["subnet"])
                m = reform_model(model, ranking.resolve(sub), calib, "admm", sub)
                gguf(m, path, tok, args.lut_type)
                done[name] = {"params_ratio": float(r["params_ratio"]), "test_ppl": perplexity(m, windows, batch_size=1),
                              "lut_ms": float(r["latency_llamacpp_lut"])}
                done_file.write_text(json.dumps(done, indent=1))
                print(f"[gguf] d: {name} reformed, test ppl {done[name]['test_ppl']:.2f} ({len(points) + 1}/{len(front)})", flush=True)
            points[name], paths[name] = done[name], path
        from benchmarks.latency_cpu_subnets import builder

        for k, v in base.items():
            g = {"plan": v["plan"], "subnet": v["subnet"], "bias": v.get("reform") == "bias"}
            points[k] = {"params_ratio": float(v["params_ratio"]), "test_ppl": float(v["ppl"]["wikitext2-test"])}
            path = work / f"{k.replace('@', '-')}-{args.lut_type}.gguf"  # weights do not change latency: the plan, sliced
            paths[k] = path if path.is_file() else gguf(builder(model, g)(), path, tok, args.lut_type)
        mode = run.settings()["objectives"][1].get("settings", {}).get("mode", "decode")
        res = measure_ggufs(paths, mode, threads=args.threads, rounds=args.rounds, reps=args.reps, n_tokens=args.prefill,
                            n_context=args.context, n_decode=args.n_decode, outtype=args.lut_type, progress=True)
    for k, p in points.items():
        p["ms"], p["spread"], p["rounds_ms"] = res[k].median_ms, res[k].spread, [1e3 * v for v in res[k].round_medians_s]
        p["fastest_ms"] = 1e3 * res[k].fastest_s  # median over rounds of each round's fastest block: less hit by a busy host
    # the same subnet twice (a uniform seed on the front is the Wanda-sp baseline's plan): the gap between
    # their measurements is the noise of this measurement, next to the differences it is asked to resolve
    keys = {k: Subnet.from_json(r["subnet"]) for k, r in ((f"front:{int(r['id'])}", r) for _, r in front.iterrows())}
    twins = [(f, b) for b, v in base.items() for f, sub in keys.items() if sub == Subnet.from_dict(v["subnet"])]
    dense_sub = SubnetSpace.from_model(model).dense()
    twins += [(f, "dense") for f, sub in keys.items() if sub == dense_sub]
    same = [(f, b, 100 * (res[f].median_s / res[b].median_s - 1), 100 * (res[f].fastest_s / res[b].fastest_s - 1))
            for f, b in twins]
    dense_pt = {"params_ratio": 1.0, "ms": res["dense"].median_ms, "fastest_ms": 1e3 * res["dense"].fastest_s,
                "spread": res["dense"].spread, "rounds_ms": [1e3 * v for v in res["dense"].round_medians_s]}
    data = {"machine": machine(), "command": command_line(), "settings": _settings(args, "d"), "run": str(run.path),
            "same_model_gaps_pct": same, "dense": dense_pt,
            "mode": mode, "dense_ms": res["dense"].median_ms, "points": points, "analysis": analyse(points),
            "analysis_fastest": analyse({k: {**p, "ms": p["fastest_ms"]} for k, p in points.items()})}
    out_raw(args, "gguf-search", data)
    a, af = data["analysis"], data["analysis_fastest"]
    md = [header("Search against llama.cpp latency vs baselines (issue 16 d)", data["machine"], data["command"]),
          f"Run `{run.path}` (budget {run.settings().get('evaluations')} evaluations: {n_evals} objective evaluations, screening "
          f"and rescoring, of {len(df)} distinct subnets; perplexity_reformed vs latency_llamacpp_lut), its front members from "
          f"{100 * lo:.0f} % params up ADMM-reformed on the quality table's calibration (as its +admm rows); "
          f"WikiText-2 test {args.windows} x {args.seq_len}; every point's {mode} latency measured in llama.cpp "
          f"({args.lut_type}, {args.threads} threads, interleaved). Dense {data['dense_ms']:.2f} ms.\n",
          f"Front dominates {a['dominated']} of {a['baselines']} baseline points (goal: all). Latency cut at equal test ppl "
          f"(front interpolated at each baseline's ppl), 70-90 % params: best {a['best_cut_70_90']}.\n",
          f"Noise: rounds spread (max-min)/median {_pct([p['spread'] for p in points.values()])}; the same subnet measured "
          f"twice (a front member and a baseline or the dense model), gap of the medians (of the fastest blocks): "
          f"{', '.join(f'{f} / {b} {g:+.1f} % ({h:+.1f} %)' for f, b, g, h in same) or 'no pair'}.\n",
          f"With each round's fastest block instead of its median block: the front dominates {af['dominated']} of "
          f"{af['baselines']} baseline points; best latency cut at equal ppl, 70-90 %: {af['best_cut_70_90']}.\n",
          "| point | params | test ppl | llama.cpp ms | fastest ms | spread | dominated by the front | latency cut at equal ppl |",
          "|---|---|---|---|---|---|---|---|"]
    for k, p in sorted(points.items(), key=lambda kv: -kv[1]["params_ratio"]):
        c = a["per_point"].get(k, {})
        cut = "" if c.get("cut") is None else f"{100 * c['cut']:.1f}%"
        md.append(f"| {k} | {100 * p['params_ratio']:.1f}% | {p['test_ppl']:.2f} | {p['ms']:.2f} | {p['fastest_ms']:.2f} | {100 * p['spread']:.0f}% | "
                  f"{c.get('dominated', '')} | {cut} |")
    publish(args, "gguf-search", md)
    return data


def _pct(xs: list[float]) -> str:
    return f"median {100 * float(np.median(xs)):.0f} %, max {100 * max(xs):.0f} %" if xs else "-"


def analyse(points: dict) -> dict:
    """Dominance of each baseline by the front, and the front's latency at the baseline's ppl (interpolated)."""
    front = sorted((p["test_ppl"], p["ms"]) for k, p in points.items() if k.startswith("front:"))
    per, cuts = {}, []
    for k, p in points.items():
        if k.startswith("front:"):
            continue
        dom = any(f_ppl <= p["test_ppl"] and f_ms <= p["ms"] and (f_ppl, f_ms) != (p["test_ppl"], p["ms"]) for f_ppl, f_ms in front)
        ok = [(pp, ms) for pp, ms in front if pp <= p["test_ppl"]]
        cut = None
        if ok and front:
            lo = min(ok, key=lambda x: x[1])
            above = [(pp, ms) for pp, ms in front if pp > p["test_ppl"]]
            ms = lo[1]
            if above:  # linear between the two front points around the baseline's ppl, when that is faster
                a, b = max(ok), min(above)
                ms = min(ms, a[1] + (b[1] - a[1]) * (p["test_ppl"] - a[0]) / (b[0] - a[0]))
            cut = 1 - ms / p["ms"]
            if 0.7 <= p["params_ratio"] <= 0.9 + 1e-9:
                cuts.append(cut)
        per[k] = {"dominated": dom, "cut": cut}
    return {"baselines": len(per), "dominated": sum(v["dominated"] for v in per.values()),
            "best_cut_70_90": None if not cuts else f"{100 * max(cuts):.1f}%", "per_point": per}


def _settings(args, part: str) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} | {"part": part}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", nargs="+", default=["a", "b", "c", "d"], choices=["a", "b", "c", "d"])
    p.add_argument("--quality", type=Path, default=RAW_DIR / "quality-main.json")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--windows", type=int, default=4, help="WikiText-2 test windows (a, d)")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per test window (a, d)")
    p.add_argument("--diff-tokens", type=int, default=512, help="(a) tokens of the first window for the logit difference")
    p.add_argument("--models", nargs="+", default=list(A_MODELS), choices=list(A_MODELS), help="(a) rows")
    p.add_argument("--types", nargs="+", default=list(TYPES), choices=list(TYPES), help="(a) GGUF types")
    p.add_argument("--speed-types", nargs="+", default=["f16", "q4_k_m"], choices=list(TYPES), help="(b) GGUF types")
    p.add_argument("--lut-type", default="q4_k_m", choices=list(TYPES), help="(c, d) GGUF type of the lookup table / search")
    p.add_argument("--subnets", type=int, default=0, help="(b, d) only the first N subnets / baseline points (0: all)")
    p.add_argument("--prefill", type=int, default=512, help="prefill tokens (b, c)")
    p.add_argument("--context", type=int, default=128, help="decode context (b, c, d)")
    p.add_argument("--n-decode", type=int, default=32, help="decode steps timed per repetition")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--n", type=int, default=20, help="(c) random subnets")
    p.add_argument("--modes", nargs="+", default=["prefill", "decode"], choices=["prefill", "decode"], help="(c) modes")
    p.add_argument("--stat", default="median", choices=["median", "min"],
                   help="(c) per round: the median block or the fastest (less hit by a busy host)")
    p.add_argument("--probe-layers", type=int, default=0, help="(c) layers of the table's probe GGUFs (0: the table's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run-dir", type=Path, default=Path("runs/gguf-search"), help="(d) search run (created if missing)")
    p.add_argument("--evaluations", type=int, default=200, help="(d) search evaluations")
    p.add_argument("--search-args", nargs=argparse.REMAINDER, default=[], help="(d) extra `nas-llm search` arguments (last)")
    p.add_argument("--smoke", action="store_true", help="tiny versions of every part; raw JSON to --smoke-dir, no RESULTS.md")
    p.add_argument("--smoke-dir", default="/tmp/nasllm-gguf-smoke")
    args = p.parse_args(argv)
    if args.smoke:
        args.windows, args.seq_len, args.diff_tokens, args.rounds, args.reps, args.n = 1, 256, 64, 1, 1, 3
        args.models, args.types = args.models[:2], ["f32", "q8_0"]
        args.speed_types, args.subnets, args.prefill, args.n_decode = ["q4_k_m"], args.subnets or 2, 64, 4
        args.evaluations = min(args.evaluations, 4)
        args.run_dir = Path(args.smoke_dir) / "run"
        args.search_args = args.search_args or ["--pop-size", "4", "--calib-samples", "4", "--calib-seq-len", "64",
                                                "--ppl-samples", "2", "--ppl-seq-len", "64", "--screen", "1"]
    torch.manual_seed(0)
    from benchmarks.quality import PROTOCOLS, setup

    model, tok, _, calib, _ = setup(PROTOCOLS["main"])
    for part in args.part:
        t0 = time.perf_counter()
        {"a": lambda: part_a(args, model, tok, calib), "b": lambda: part_b(args, model, tok),
         "c": lambda: part_c(args, model, tok), "d": lambda: part_d(args, model, tok, calib)}[part]()
        print(f"[gguf] part {part}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

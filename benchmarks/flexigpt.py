"""FlexiGPT vs ShortGPT vs ours on SmolLM2 at 30% and 40% decoder-parameter reduction by depth.

Rows (cached in ``benchmarks/results/flexigpt.json`` as soon as each is measured):

    shortgpt      ShortGPT (Block Influence) drops n layers, n nearest the ratio; plain slicing
    flexi         the same dropped layers, each replaced by a kept block + rank-r adapters (SVD init,
                  output normalisation fitted on calibration data, no training)
    flexi+train   flexi + short training of adapters/normalisation on the calibration tokens (tokens and
                  CPU minutes recorded)
    ours+admm     width+depth search (--run) + ADMM, the front member nearest flexi's *stored* parameters; without
                  --run, the quality table's ours+admm row at the same ratio (its plan from quality-main.json, ADMM redone)

Stored parameters count a shared block once (``nas_llm.model.shared_block.stored_params``); the ratio
column is stored decoder parameters / dense. Test perplexity: WikiText-2 and PTB test, --windows windows
of 2048 tokens; zero-shot: 7 tasks, --limit items each. Calibration: 32 x 256 tokens of wikitext2-valid
(seed 0), the quality table's main protocol, for every method.

    flock /tmp/nasllm-heavy.lock python benchmarks/flexigpt.py --run 0.7=runs/c70 --run 0.6=runs/c60
    python benchmarks/flexigpt.py --smoke          # 1 window, 5 items, 30% only: proves the script runs
    python benchmarks/flexigpt.py --table-only
    python benchmarks/flexigpt.py --tune svd-32-lsq nearest-32-none svd-32-lsq-asvd svd-32-lsq-kd20   # pick defaults

``--tune`` measures FlexiGPT settings (RULE-RANK-NORM[-INIT][-LOSSSTEPS][-lrLR][-bBATCH], e.g. svd-32-lsq-asvd-kd50-lr0.001-b2) at 30% on validation data only:
perplexity on the last 2 x 512 tokens of wikitext2-valid, calibration windows from the rest of it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import RAW_DIR, command_line, header, machine, save_raw, write_section  # noqa: E402

METHODS = ("dense", "shortgpt", "flexi", "flexi+train", "ours+admm")
RATIOS = (0.7, 0.6)
DATASETS = ("wikitext2-test", "ptb-test")
CALIB = dict(source="wikitext2-valid", n_samples=32, seq_len=256, seed=0)


def decoder_params(model) -> int:
    from nas_llm.model.shared_block import stored_params

    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is None or head.weight is emb
    return stored_params(model) - emb.numel() - (0 if tied else head.weight.numel()) - model.model.norm.weight.numel()


def build(method: str, ratio: float, ctx: dict, args) -> tuple[torch.nn.Module, dict]:
    """(model to evaluate, info) for one row; CPU seconds of the preparation in ``info``."""
    from benchmarks.quality import build as quality_build
    from nas_llm.baselines import shortgpt
    from nas_llm.model.flexi import flexi_refine
    from nas_llm.model.slicing import slice_model

    t0, c0 = time.perf_counter(), time.process_time()
    info: dict = {}
    if method == "dense":
        model = ctx["model"]
    elif method == "ours+admm" and ctx["runs"](ratio) is None:  # the quality table's own pick at this ratio, ADMM redone
        from benchmarks.deploy_llamacpp import quality_rows, rebuild

        key = f"ours+admm@{ratio:g}"
        row = quality_rows(RAW_DIR / "quality-main.json")["rows"].get(key)
        if row is None or "plan" not in row:
            raise ValueError(f"'ours+admm' needs --run RUN (or RATIO=RUN), or a {key} row with a plan in quality-main.json")
        model = rebuild(row, ctx["model"], ctx["calib"])
        info = {"source": f"quality-main.json {key} (search run {row.get('run')})", "target_ratio": ratio}
    elif method == "ours+admm":
        target = ctx["stored_ratio"].get(ratio, ratio)  # flexi's stored params at this ratio: the same budget
        model, info = quality_build("ours+admm", target, ctx["model"], ctx["stats"], ctx["calib"], ctx["space"], ctx["runs"](ratio))
        info = {k: v for k, v in info.items() if k not in ("plan", "subnet")} | {"target_ratio": target}
    else:
        b = shortgpt(ctx["model"], ratio, ctx["stats"](), space=ctx["space"])
        plan = b.plan()
        info["dropped"] = [i for i, lp in enumerate(plan.layers) if not lp.keep]
        if method == "shortgpt":
            model = slice_model(ctx["model"], plan, subnet=b.subnet)
        else:
            steps = args.steps if method == "flexi+train" else 0
            model = flexi_refine(ctx["model"], plan, ctx["calib"], rank=args.rank, steps=steps, lr=args.lr, train_batch=args.train_batch,
                                 train_ids=ctx["train_ids"](), subnet=b.subnet, progress=False)
            rec = model.config.nas_llm["flexi"]
            info.update(shares={e["layer"]: e["shares"] for e in rec["replaced"]}, rank=args.rank, norm=rec["norm"],
                        similarity=rec["similarity"], init=rec["init"], steps=steps, lr=args.lr, train_tokens=rec["train_tokens"],
                        losses=rec["losses"])
    info["params"] = int(sum(p.numel() for p in model.parameters()))
    info["params_ratio"] = decoder_params(model) / ctx["dense_decoder"]
    info["prepare_s"] = round(time.perf_counter() - t0, 1)
    info["cpu_minutes"] = round((time.process_time() - c0) / 60, 2)
    return model, info


def fmt(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f}"


def table(data: dict, cmd: str) -> str:
    s, rows = data["settings"], data["rows"]
    out = [header("FlexiGPT vs ShortGPT by depth (SmolLM2-135M)", data.get("machine") or machine(), cmd)]
    c = s["calib"]
    out.append(f"Calibration {c['n_samples']} x {c['seq_len']} tokens of {c['source']} (seed {c['seed']}); "
               f"test ppl over the first {s['windows']} windows of 2048 tokens; zero-shot on the first {s['limit']} items of "
               f"each task. Ratio = stored decoder parameters / dense (a shared block counts once). FlexiGPT: rank "
               f"{s['rank']}, input-weighted SVD init, least-squares output normalisation; flexi+train: {s['steps']} KD steps of "
               f"{s['train_batch']} x 256 tokens (lr {s['lr']:g}) drawn from {s['train_windows']} windows of {c['source']} (seed 1). "
               "No 'ShortGPT + ADMM' row: ADMM refits the input columns a width cut removes from a kept map, and dropping "
               "whole blocks removes none, so it does not apply to a depth-only cut.\n")
    tasks = sorted({t for r in rows.values() for t in (r.get("zeroshot") or {}).get("tasks", {})})
    out.append("| method | cut | stored ratio | " + " | ".join(d.replace("-test", "") for d in DATASETS) + " | zero-shot mean | "
               + " | ".join(tasks) + " | prep CPU min | train tokens |")
    out.append("|---" * (6 + len(DATASETS) + len(tasks)) + "|")
    for r, m in [(1.0, "dense")] + [(r, m) for r in s["ratios"] for m in METHODS if m != "dense"]:
        row = rows.get("dense" if m == "dense" else f"{m}@{r:g}")
        if row:
            zs = row.get("zeroshot") or {}
            out.append(f"| {m} | {int(round(100 * (1 - r)))}% | {row['params_ratio']:.3f} | "
                       + " | ".join(fmt(row["ppl"].get(d)) for d in DATASETS)
                       + f" | {fmt(100 * zs['mean']) if zs else '—'} | "
                       + " | ".join(fmt(100 * zs["tasks"][t]) if t in zs.get("tasks", {}) else "—" for t in tasks)
                       + f" | {row['cpu_minutes']:.1f} | {row.get('train_tokens') or '—'} |")
    lines = verdict(data)
    if lines:
        out += ["", "Computed from the rows above (metrics: both test perplexities, the zero-shot mean and each task):", *lines]
    return "\n".join(out)


def verdict(data: dict) -> list[str]:
    """Per ratio: on how many metrics (2 test perplexities, zero-shot mean, each task) each FlexiGPT row beats
    ShortGPT (the paper's claim) and ours+ADMM; computed from the rows, so a re-run cannot leave a stale reading."""
    out = []
    for r in data["settings"]["ratios"]:
        rows = {m: data["rows"].get(f"{m}@{r:g}") for m in METHODS if m != "dense"}

        def metrics(row: dict) -> dict:
            zs = row.get("zeroshot") or {}
            return {**{d: -row["ppl"][d] for d in DATASETS}, "zero-shot mean": zs.get("mean", float("nan")),
                    **{t: v for t, v in zs.get("tasks", {}).items()}}

        for f in ("flexi", "flexi+train"):
            for other in ("shortgpt", "ours+admm"):
                if rows.get(f) and rows.get(other):
                    a, b = metrics(rows[f]), metrics(rows[other])
                    won = [k for k in a if k in b and a[k] > b[k]]
                    lost = [k for k in a if k in b and a[k] < b[k]]
                    tied = [k for k in a if k in b and a[k] == b[k]]
                    out.append(f"- {int(round(100 * (1 - r)))}% cut: {f} beats {other} on {len(won)} of {len(a)} metrics"
                               + (f"; loses on {', '.join(lost)}" if lost else "") + (f"; ties on {', '.join(tied)}" if tied else ""))
    return out


def tune(configs: list[str], n_calib: int, threads: int) -> None:
    """Validation perplexity of each FlexiGPT setting at 30% (ShortGPT's dropped layers); raw JSON only."""
    from nas_llm import load_model
    from nas_llm.baselines import calibration_stats, shortgpt
    from nas_llm.model.data import tokenize
    from nas_llm.model.flexi import flexi_refine
    from nas_llm.model.metrics import perplexity
    from nas_llm.model.slicing import slice_model

    torch.set_num_threads(threads)
    model, tok = load_model("smollm2-135m")
    text = tokenize(tok, "wikitext2-valid")
    val, rest = text[-1024:].reshape(2, 512), text[:-1024]  # disjoint: calibration never sees the scored tokens
    starts = torch.randint(0, len(rest) - 256, (n_calib,), generator=torch.Generator().manual_seed(0))
    calib = torch.stack([rest[s : s + 256] for s in starts.tolist()])
    b = shortgpt(model, 0.7, calibration_stats(model, calib, progress=False))
    plan, path = b.plan(), RAW_DIR / "flexigpt-tune.json"
    data = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
    data["rows"].setdefault("dense", {"ppl": perplexity(model, val)})
    short = "shortgpt" if n_calib == 8 else f"shortgpt@calib{n_calib}"
    data["rows"].setdefault(short, {"ppl": perplexity(slice_model(model, plan), val)})
    data["dropped"] = data["dropped"] if isinstance(data.get("dropped"), dict) else {}
    data["dropped"][str(n_calib)] = [i for i, lp in enumerate(plan.layers) if not lp.keep]
    for c in configs:
        rule, rank, norm, *more = c.split("-")
        init = next((m for m in more if m in ("svd", "asvd")), "svd")
        train = [m for m in more if m[:2] in ("kd", "ce")]
        loss, steps = (train[0][:2], int(train[0][2:])) if train else ("kd", 0)
        lr = float(next((m[2:] for m in more if m.startswith("lr")), 3e-4))
        bs = int(next((m[1:] for m in more if m.startswith("b") and m[1:].isdigit()), 4))
        t0, c0 = time.perf_counter(), time.process_time()
        m = flexi_refine(model, plan, calib, rank=int(rank), similarity=rule, norm=norm, init=init, steps=steps, loss=loss,
                         lr=lr, train_batch=bs, progress=False)
        rec = m.config.nas_llm["flexi"]
        key = c if n_calib == 8 else f"{c}@calib{n_calib}"
        data["rows"][key] = {"ppl": perplexity(m, val), "cpu_min": round((time.process_time() - c0) / 60, 2), "s": round(time.perf_counter() - t0),
                           "shares": {e["layer"]: e["shares"] for e in rec["replaced"]}, "train_tokens": rec["train_tokens"],
                           "losses": rec["losses"], "stored_params": sum(p.numel() for p in m.parameters())}
        save_raw("flexigpt-tune", data)
        row = data["rows"][key]
        print(f"[tune] {key}: ppl {row['ppl']:.2f} (shortgpt {data['rows'][short]['ppl']:.2f}, dense "
              f"{data['rows']['dense']['ppl']:.2f}); shares {row['shares']}; {row['cpu_min']} CPU min", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS), help="decoder-parameter ratios kept (0.7 = 30%% cut)")
    p.add_argument("--run", action="append", default=None, metavar="[RATIO=]RUN", help="search run for ours+admm (repeatable)")
    p.add_argument("--windows", type=int, default=4, help="test windows of 2048 tokens per dataset")
    p.add_argument("--limit", type=int, default=250, help="zero-shot items per task (0 = all)")
    p.add_argument("--rank", type=int, default=32, help="FlexiGPT adapter rank")
    p.add_argument("--steps", type=int, default=80, help="training steps of flexi+train")
    p.add_argument("--train-batch", type=int, default=2, help="windows of 256 tokens per training step")
    p.add_argument("--train-windows", type=int, default=160, help="training windows of 256 tokens from wikitext2-valid (seed 1)")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate of flexi+train")
    p.add_argument("--smoke", action="store_true",
                   help="1 window, 5 items, 30%% only, 4 calibration windows, 2 steps; raw JSON flexigpt-smoke.json, no RESULTS.md")
    p.add_argument("--tune", nargs="+", default=None, metavar="RULE-RANK-NORM[-INIT][-LOSSSTEPS]",
                   help="measure FlexiGPT settings on validation data (e.g. svd-32-lsq-asvd nearest-0-lsq svd-32-lsq-asvd-kd20-lr0.001-b1)")
    p.add_argument("--tune-calib", type=int, default=8, help="calibration windows of 256 tokens for --tune")
    p.add_argument("--threads", type=int, default=1, help="torch threads for --tune (1 on a shared machine)")
    p.add_argument("--redo", action="store_true")
    p.add_argument("--table-only", action="store_true")
    args = p.parse_args(argv)
    if args.tune:
        tune(args.tune, args.tune_calib, args.threads)
        return 0
    if args.smoke:
        args.windows, args.limit, args.ratios, args.steps, args.train_windows = 1, 5, [0.7], 2, 4
    name = "flexigpt-smoke" if args.smoke else "flexigpt"
    calib_set = CALIB | ({"n_samples": 4} if args.smoke else {})
    settings = {"windows": args.windows, "limit": args.limit, "rank": args.rank, "steps": args.steps, "lr": args.lr,
                "train_batch": args.train_batch, "train_windows": args.train_windows, "calib": calib_set}
    path = RAW_DIR / f"{name}.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    if data.get("settings", {}) | {"ratios": None} != settings | {"ratios": None}:
        data = {"settings": settings, "rows": {}}
    data["settings"]["ratios"] = sorted(set(data["settings"].get("ratios") or []) | set(args.ratios), reverse=True)
    if args.table_only:
        write_section("flexigpt", table(data, command_line()))
        return 0

    from benchmarks.quality import run_for, setup
    from nas_llm.evaluate import mean_accuracy, perplexities, zeroshot

    model, tok, space, calib, stats_fn = setup(dict(calib_samples=calib_set["n_samples"], calib_seq=calib_set["seq_len"]))
    from nas_llm.model.data import calibration_batch

    ctx = {"model": model, "space": space, "calib": calib, "stats": stats_fn, "runs": lambda r: run_for(args.run, r),
           "dense_decoder": decoder_params(model), "stored_ratio": {},
           "train_ids": lambda: calibration_batch(tok, CALIB["source"], args.train_windows, 256, seed=1)}
    for r in sorted(args.ratios, reverse=True):
        if f"flexi@{r:g}" in data["rows"]:
            ctx["stored_ratio"][r] = data["rows"][f"flexi@{r:g}"]["params_ratio"]
        for m in args.methods:
            key = "dense" if m == "dense" else f"{m}@{r:g}"
            if key in data["rows"] and not args.redo:
                continue
            try:
                sub, info = build(m, r, ctx, args)
            except (ValueError, FileNotFoundError) as e:
                print(f"[flexigpt] {key}: skipped ({e})", file=sys.stderr)
                continue
            if m == "flexi":
                ctx["stored_ratio"][r] = info["params_ratio"]
            t0 = time.perf_counter()
            ppl = perplexities(sub, tok, list(DATASETS), 2048, args.windows, batch_size=1)
            info["ppl"] = {d: v["ppl"] for d, v in ppl.items()}
            z = zeroshot(sub, tok, "all", limit=args.limit or None, batch_size=16)
            info["zeroshot"] = {"tasks": {t: v[v["metric"]] for t, v in z.items()}, "mean": mean_accuracy(z), "raw": z}
            info["eval_s"] = round(time.perf_counter() - t0, 1)
            data["rows"][key] = info
            data["machine"] = machine()
            save_raw(name, data)
            print(f"[flexigpt] {key}: ratio {info['params_ratio']:.3f}, " + ", ".join(f"{d} {v:.2f}" for d, v in info["ppl"].items())
                  + f", zero-shot {100 * info['zeroshot']['mean']:.1f} ({info['cpu_minutes']} CPU min to prepare)", flush=True)
            del sub
    if not args.smoke:
        write_section("flexigpt", table(data, command_line()))
    else:
        print(table(data, command_line()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

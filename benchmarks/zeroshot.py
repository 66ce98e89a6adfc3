"""Zero-shot accuracy (7 local tasks) and test perplexity: dense SmolLM2-135M vs the exported knee of a search run.

Run under the heavy-job lock (it loads SmolLM2 and runs for minutes)::

    flock /tmp/nasllm-heavy.lock python benchmarks/zeroshot.py --models dense knee --run runs/smollm2-demo

Each model's numbers are kept in benchmarks/results/zeroshot.json, so the dense model and the knee can be
measured in separate invocations; the RESULTS.md section is rebuilt from whatever has been measured.
``--limit N`` scores only the first N items of each task (say so when quoting the numbers).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._results import RAW_DIR, command_line, header, machine, save_raw, write_section  # noqa: E402

NAME = "zeroshot"


def _load_raw() -> dict:
    f = RAW_DIR / f"{NAME}.json"
    return json.loads(f.read_text()) if f.is_file() else {"models": {}}


def measure(which: str, run: str | None, limit: int | None, seq_len: int, max_windows: int | None, batch_size: int) -> dict:
    from nas_llm import load_model
    from nas_llm.evaluate import evaluate

    extra: dict = {}
    if which == "dense":
        model, tok = load_model("smollm2-135m")
        extra["what"] = "dense SmolLM2-135M-Instruct (fp32)"
    else:
        from nas_llm.deploy import export_pick
        from nas_llm.select import pick

        if not run:
            raise SystemExit("--run is needed for the knee")
        sel = pick(run, "knee")
        out = Path(run) / "exports" / "knee"
        export_pick(run, "knee", out, overwrite=True, command=f"nas-llm export {run} --pick knee --out {out}")
        model, tok = load_model(str(out))
        extra = {"what": f"knee of {run} (id {sel.id}, {sel.row.get('source', '')})", "run": run, "id": sel.id, "export": str(out),
                 "params_ratio": float(sel.row["params_ratio"]), "search_values": {n: float(sel.row[n]) for n in sel.objectives.names},
                 "reformed": bool(sel.row.get("is_reformed", False))}
    res = evaluate(model, tok, seq_len=seq_len, max_windows=max_windows, tasks="all", limit=limit, batch_size=batch_size)
    res.update(extra, seq_len=seq_len, max_windows=max_windows)
    if which == "knee":
        (Path(extra["export"]) / "eval.json").write_text(json.dumps(res, indent=1))  # the report shows it
    return res


def table(models: dict) -> str:
    from nas_llm.evaluate.tasks import ALL_TASKS, TASKS

    order = [m for m in ("dense", "knee") if m in models]
    head = "| task | metric | n | " + " | ".join(order) + (" | knee - dense |" if len(order) == 2 else " |")
    lines = [head, "|" + "---|" * (3 + len(order) + (1 if len(order) == 2 else 0))]
    for t in ALL_TASKS:
        metric = TASKS[t][2]
        vals = [models[m]["zeroshot"].get(t, {}).get(metric) for m in order]
        n = models[order[0]]["zeroshot"].get(t, {}).get("n", "")
        row = f"| {t}{' (1,000-item subset)' if t == 'hellaswag' else ''} | {metric} | {n} | " + " | ".join("" if v is None else f"{v:.4f}" for v in vals)
        if len(order) == 2 and None not in vals:
            row += f" | {vals[1] - vals[0]:+.4f}"
        lines.append(row + " |")
    means = [models[m].get("zeroshot_mean") for m in order]
    lines.append("| **mean** | | | " + " | ".join(f"**{v:.4f}**" if v is not None else "" for v in means)
                 + (f" | {means[1] - means[0]:+.4f} |" if len(order) == 2 and None not in means else " |"))
    for src in ("wikitext2-test", "ptb-test"):
        vals = [models[m]["perplexity"].get(src) for m in order]
        if all(vals):
            lines.append(f"| {src} perplexity | ppl | {vals[0]['windows']} x {vals[0]['seq_len']} tok | "
                         + " | ".join(f"{v['ppl']:.2f}" for v in vals) + (" | |" if len(order) == 2 else " |"))
    lines.append("| parameters (whole model) | | | " + " | ".join(f"{models[m]['params'] / 1e6:.1f} M" for m in order) + (" | |" if len(order) == 2 else " |"))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=["dense", "knee"], default=["dense", "knee"])
    ap.add_argument("--run", default="runs/smollm2-demo", help="search run whose knee is exported and evaluated")
    ap.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--max-windows", type=int, default=None, help="perplexity windows per test set (default: all)")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    raw = _load_raw()
    info = machine()
    for m in args.models:
        res = measure(m, args.run, args.limit, args.seq_len, args.max_windows, args.batch_size)
        res.update(command=command_line(), machine=info)
        raw["models"][m] = res
        save_raw(NAME, raw)
        print(m, json.dumps({k: res[k] for k in ("zeroshot_mean", "seconds", "limit")}))
        write_section(NAME, section(raw["models"]))  # after each model, so a cut-short run still leaves its table


def section(models: dict) -> str:
    first = models[next(iter(models))]
    notes = []
    for m, r in models.items():
        notes.append(f"- **{m}**: {r.get('what', m)}; limit {r.get('limit') or 'none (every item)'}; "
                     f"measured {r['machine']['date']} in {r['seconds'] / 60:.1f} min with `{r['command']}`.")
    md = header("Zero-shot accuracy: dense SmolLM2 vs the exported knee", first["machine"], first["command"]) + "\n" + "\n".join(notes) + "\n\n" + table(models) + (
        "\n\nlm-eval 0.4.13 through `nas_llm.evaluate.shared_prefix_lm.SharedPrefixLM` (an `HFLM` subclass that scores the answer "
        "choices of a question on one forward of their shared context; same tokenisation, same numbers up to float "
        "rounding) on the loaded model, the task YAMLs in `nas_llm/tasks/` on the local files in "
        "`../shared/data/zeroshot` (offline). Headline metric: acc_norm for PIQA, ARC, OpenBookQA, HellaSwag; acc for BoolQ "
        "and WinoGrande. HellaSwag is a 1,000-item subset of the validation set and the ARC files have 4 choices for every "
        "item, so these are close to, not identical with, published lm-eval numbers. Perplexity: GPTQ protocol, consecutive "
        "windows of the test split. The knee's search-time values are on the calibration split (WikiText-2 valid)."
    )
    if "knee" in models:
        k = models["knee"]
        md += (f"\n\nKnee: params ratio {k.get('params_ratio', float('nan')):.3f}, search values "
               + ", ".join(f"{n} {v:.4g}" for n, v in (k.get("search_values") or {}).items())
               + (", reformed" if k.get("reformed") else ", not reformed") + ".")
    return md


if __name__ == "__main__":
    main()

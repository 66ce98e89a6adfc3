"""``nas-llm evaluate DIR``: test-set perplexity and offline zero-shot accuracy of a model folder."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from pathlib import Path

from nas_llm.errors import ConfigError
from nas_llm.evaluate import DEFAULT_PPL, EVAL_FILE, evaluate, format_result, go_offline
from nas_llm.evaluate.tasks import ALL_TASKS, parse_tasks
from nas_llm.model.data import resolve_source
from nas_llm.model.atomic import atomic_write_text


EPILOG = """examples:
  nas-llm evaluate exports/knee                     # WikiText-2/PTB test ppl + 7 zero-shot tasks
  nas-llm evaluate smollm2-135m --tasks piqa,arc_easy --limit 100 --out dense.json
"""

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog, p.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
    p.add_argument("model", help="exported model folder (nas-llm export), any local HF folder, or a built-in name (smollm2-135m)")
    p.add_argument("--seq-len", type=int, default=2048, help="perplexity window length in tokens (default 2048)")
    p.add_argument("--max-windows", type=int, default=None, help="use at most this many windows per perplexity set (quick runs)")
    p.add_argument("--ppl", default=",".join(DEFAULT_PPL),
                   help="comma-separated perplexity texts (bundled names or file paths), or 'none' (default %(default)s)")
    p.add_argument("--tasks", default="all", help=f"zero-shot tasks: 'all', 'none', or a comma list of {', '.join(ALL_TASKS)}")
    p.add_argument("--limit", type=float, default=None, help="items per zero-shot task (an int; a float < 1 is a fraction) for quick runs")
    p.add_argument("--data-dir", default=None, help="folder with the zero-shot jsonl files (default: <shared data>/zeroshot)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", default=None, help=f"JSON output (default: MODEL/{EVAL_FILE}; required for a built-in name)")


def main(args: argparse.Namespace) -> int:
    from nas_llm.model.loading import load_model

    go_offline()
    model_path = Path(args.model).expanduser()
    out = Path(args.out) if args.out else (model_path / EVAL_FILE if model_path.is_dir() else None)
    if out is None:
        raise ConfigError(f"{args.model} is not a folder, so there is nowhere beside it to write {EVAL_FILE}; pass --out FILE.json")
    if args.seq_len < 2:
        raise ConfigError(f"--seq-len must be >= 2, got {args.seq_len}")
    if args.max_windows is not None and args.max_windows < 1:
        raise ConfigError(f"--max-windows must be >= 1 (or left out for every window), got {args.max_windows}")
    if args.limit is not None and not (args.limit > 0 and math.isfinite(args.limit)):
        raise ConfigError(f"--limit must be > 0: a whole number of items per task, or a fraction < 1; got {args.limit}")
    if args.limit is not None and args.limit >= 1 and args.limit != int(args.limit):
        raise ConfigError(f"--limit {args.limit}: give a whole number of items (e.g. 100) or a fraction below 1 (e.g. 0.1)")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    tasks = None if args.tasks.strip().lower() == "none" else parse_tasks(args.tasks)
    ppl = [] if args.ppl.strip().lower() == "none" else [s.strip() for s in args.ppl.split(",") if s.strip()]
    limit = None if args.limit is None else (int(args.limit) if args.limit >= 1 else args.limit)
    for src in ppl:
        resolve_source(src)  # a missing text fails now, not after the model load
    model, tok = load_model(str(args.model))
    res = evaluate(model, tok, ppl_sources=ppl, seq_len=args.seq_len, max_windows=args.max_windows, tasks=tasks,
                   limit=limit, data_dir=args.data_dir, batch_size=args.batch_size)
    res = {"model": str(args.model), **res, "command": "nas-llm " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["evaluate"] else None,
           "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(out, json.dumps(res, indent=1))
    print(format_result(res))
    print(f"wrote {out}")
    return 0

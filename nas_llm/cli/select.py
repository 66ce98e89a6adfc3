"""``nas-llm select runs/NAME``: choose one deployment point by a budget, the knee, or weights."""
from __future__ import annotations

import argparse
import json

from nas_llm.errors import ConfigError
from nas_llm.select import select


EPILOG = """examples:
  nas-llm select runs/smollm2 --max-latency-ms 20   # best perplexity within 20 ms
  nas-llm select runs/smollm2 --knee --json
"""

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog, p.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
    p.add_argument("run", help="run folder (runs/NAME)")
    p.add_argument("--max-latency-ms", type=float, default=None, help="latency budget (ms)")
    p.add_argument("--max-params-ratio", type=float, default=None, help="decoder-parameter ratio budget (0..1)")
    p.add_argument("--max-ppl", type=float, default=None, help="perplexity budget")
    p.add_argument("--budget", action="append", default=None, metavar="'NAME<=X'",
                   help="any other budget on a table column ('NAME<=x', 'NAME>=x', 'NAME in [a,b]'); repeatable")
    p.add_argument("--optimize", default=None, help="with a budget: the objective to optimise among points within it "
                                                   "(default perplexity; latency when only --max-ppl is given)")
    p.add_argument("--knee", action="store_true", help="choose the knee (pymoo high trade-off point); the default without a budget")
    p.add_argument("--weights", default=None, help="choose by ASF weights, e.g. 'perplexity=1,latency=2' (larger = matters more)")
    p.add_argument("--json", action="store_true", help="print the choice as JSON")


def main(args: argparse.Namespace) -> int:
    has_budget = any(v is not None for v in (args.max_latency_ms, args.max_params_ratio, args.max_ppl)) or bool(args.budget)
    chosen = [r for r, on in (("budget", has_budget), ("knee", args.knee), ("weights", args.weights is not None)) if on]
    if len(chosen) > 1:
        raise ConfigError(f"choose one rule: a budget, --knee or --weights (got {', '.join(chosen)})")
    rule = chosen[0] if chosen else "knee"
    sel = select(args.run, rule, max_latency_ms=args.max_latency_ms, max_params_ratio=args.max_params_ratio,
                 max_ppl=args.max_ppl, budget=args.budget, weights=args.weights, optimize=args.optimize)
    if args.json:
        print(json.dumps({**sel.to_dict(), "export": f"nas-llm export {args.run} --pick {sel.id} --out OUT_DIR"}, indent=1, default=str))
    else:
        print(sel.describe(args.run))
    return 0



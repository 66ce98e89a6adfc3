"""``nas-llm`` command line. Each subcommand lives in the module that owns the concept.

A subcommand module exposes ``add_arguments(parser)`` and ``main(args) -> int``; modules are
imported only when their subcommand runs, so ``nas-llm --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("nas_llm.cli.demo", "quick start: search, reform and export a SmolLM2 subnet"),
    "search": ("nas_llm.cli.search", "multi-objective subnet search (pymoo or Optuna)"),
    "reform": ("nas_llm.cli.reform", "ADMM weight reformation of every Pareto member of a run"),
    "report": ("nas_llm.cli.report", "self-contained HTML report of a run"),
    "select": ("nas_llm.cli.select", "choose a deployment point by budget, knee or weights"),
    "export": ("nas_llm.cli.export", "export a chosen subnet as a smaller HF model folder"),
    "evaluate": ("nas_llm.cli.evaluate", "perplexity and zero-shot accuracy of an exported model"),
    "latency": ("nas_llm.cli.latency", "measure latency / validate latency predictors"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas-llm", description="Search, reform and export smaller, faster subnets of causal LMs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        wanted = argv[0]
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_main=mod.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportError, NotImplementedError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"nas-llm {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``nas-llm`` command line. Each subcommand lives in the module that owns the concept.

A subcommand module exposes ``add_arguments(parser)`` and ``main(args) -> int``; modules are
imported only when their subcommand runs, so ``nas-llm --help`` stays fast.

Errors: what nas-llm refuses on purpose (:class:`nas_llm.errors.NasLLMError` and its subclasses) and
what the operating system refuses (a missing file, a full or read-only disk, a permission) print one
line ``nas-llm COMMAND: error: MESSAGE`` and exit 2. Anything else is a bug and shows its traceback;
``--debug`` (before or after the subcommand) shows the traceback for everything.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import sys

from nas_llm.errors import NasLLMError

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
EXPECTED = (NasLLMError, OSError)  # ours and the OS's: one line; anything else is a bug
OS_HINTS = {
    errno.ENOSPC: "the disk is full; free some space or write somewhere else",
    errno.EROFS: "the file system is read-only; write somewhere else",
    errno.EACCES: "permission denied; check the path's owner and mode, or write somewhere else",
    errno.EDQUOT: "the disk quota is exceeded; free some space or write somewhere else",
}
_DEBUG_HELP = "show the full traceback of any error (for bug reports)"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas-llm", description="Search, reform and export smaller, faster subnets of causal LMs.")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", help=_DEBUG_HELP)  # for --help; main() takes it anywhere
        if name == wanted:
            mod = importlib.import_module(module)
            mod.add_arguments(p)
            p.set_defaults(_main=mod.main)
    return parser


def error_line(command: str, e: BaseException) -> str:
    """The one line the CLI prints for an expected error: the message, and for OS errors a fix."""
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
    if isinstance(e, OSError) and e.errno in OS_HINTS and OS_HINTS[e.errno] not in text:
        text += f" ({OS_HINTS[e.errno]})"
    return f"nas-llm {command}: error: {text}"


def _pop_debug(argv: list[str]) -> tuple[list[str], bool]:
    """``--debug`` anywhere before a ``--`` (also after nested subcommands such as ``latency measure``)."""
    end = argv.index("--") if "--" in argv else len(argv)
    rest = [a for a in argv[:end] if a != "--debug"] + argv[end:]
    return rest, len(rest) < len(argv)


def main(argv: list[str] | None = None) -> int:
    argv, debug = _pop_debug(list(sys.argv[1:] if argv is None else argv))
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except EXPECTED as e:
        if debug:
            raise
        print(error_line(args.command, e), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""``nas-llm search``: arguments -> :class:`~nas_llm.search.SearchConfig` -> :func:`~nas_llm.search.run_search`.

The flags are the config's fields (``nas_llm.search.config``); ``--reform`` then reforms every
Pareto member with :func:`nas_llm.reform.reform_run`, still holding the run folder's lock.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
import warnings
from typing import Iterator

EPILOG = """examples:
  nas-llm search --model smollm2-135m --out runs/smollm2 --evaluations 200
  nas-llm search --out runs/r80 --objectives perplexity_reformed,params_ratio \\
      --constraint "params_ratio in [0.785,0.815]" --driver optuna --workers 2 --evaluations 96
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from nas_llm.search.config import add_arguments as config_arguments

    config_arguments(p)
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def main(args: argparse.Namespace) -> int:
    from nas_llm.search.config import SearchConfig
    from nas_llm.search.runner import run_search, search_lock

    config = SearchConfig.from_args(args).validate()
    with one_line_warnings(), search_lock(config):
        t0 = time.perf_counter()
        res = run_search(config)
        print_result(config, res, time.perf_counter() - t0)
        if config.reform:
            _reform(config, res)
    return 0


def print_result(config, res, wall: float) -> None:
    """The result line, the front (id, objectives, size, source) and where the run folder is."""
    print(res)
    if config.join:
        print(f"worker {config.worker_id} done; run `nas-llm search --resume` with the same arguments after all "
              f"workers finish to rewrite the table", file=sys.stderr)
        return
    front = res.front
    cols = list(dict.fromkeys(["id", *res.objectives, "params_ratio", "source"]))
    if len(front):
        print(front[[c for c in cols if c in front]].to_string(index=False))
    print(f"{len(res.table)} evaluations in {wall:.1f} s -> {config.out}")


def _reform(config, res) -> None:
    from nas_llm.reform import reform_run
    from nas_llm.run import Run

    ctx = res.context
    df = reform_run(Run(config.out), ctx.model, ctx.tokenizer, config.reform, progress=config.progress,
                    command=f"nas-llm search ... --reform {config.reform}")
    print(f"reformed {int(df['reformed'].sum())} Pareto members with {config.reform} (columns *_reformed)")


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Our warnings as ``nas-llm search: warning: ...`` lines instead of Python's file:line form."""
    def show(message, category, filename, lineno, file=None, line=None):
        print(f"nas-llm search: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield

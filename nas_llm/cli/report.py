"""``nas-llm report runs/NAME``: one self-contained HTML file to explore a run's front."""
from __future__ import annotations

import argparse

from nas_llm.report import write_report


EPILOG = """examples:
  nas-llm report runs/smollm2                       # writes runs/smollm2/report.html
  nas-llm report runs/smollm2 --pick 12 --out /tmp/front.html
"""

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog, p.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
    p.add_argument("run", help="run folder (runs/NAME)")
    p.add_argument("--out", default=None, help="HTML file to write (default RUN/report.html)")
    p.add_argument("--pick", type=int, default=None,
                   help="row id shown first in the per-layer picture (default: the fastest front member within 2x the best perplexity)")


def main(args: argparse.Namespace) -> int:
    path = write_report(args.run, args.out, args.pick)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, opens offline in any browser)")
    return 0


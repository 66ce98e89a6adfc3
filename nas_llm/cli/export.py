"""``nas-llm export runs/NAME --pick ID|knee --out DIR``: ship one point of a run as a smaller model folder."""
from __future__ import annotations

import argparse
import shlex
import sys

from nas_llm.deploy import export_pick


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (runs/NAME)")
    p.add_argument("--pick", required=True, help="row id (see the report's front table) or 'knee'")
    p.add_argument("--out", required=True, help="output folder for the model")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def main(args: argparse.Namespace) -> int:
    cmd = "nas-llm " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["export"] else None
    out = export_pick(args.run, args.pick, args.out, overwrite=args.overwrite, command=cmd)
    print(f"exported to {out}\n  evaluate it: nas-llm evaluate {shlex.quote(str(out))} --limit 100")
    return 0


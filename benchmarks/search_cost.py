"""Search cost table: wall time, evaluations, evaluations/min, cache hits, time in each objective.

Reads finished run folders only (their ``run.json`` and ``evaluations.csv``), so it costs nothing
to re-run; the searches themselves are the commands stored in each run.json (shown in the table).
Runs made before the per-objective timing existed show "not recorded" there.

    python benchmarks/search_cost.py runs/smollm2-demo runs/c80 runs/c50
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import RAW_DIR, command_line, header, machine, save_raw, write_section  # noqa: E402


def cost(run_dir: Path) -> dict:
    """One run's cost figures from its run.json and table."""
    s = json.loads((run_dir / "run.json").read_text())
    df = pd.read_csv(run_dir / "evaluations.csv")
    wall = float(s.get("wall_s") or "nan")
    obj_s = s.get("objective_s") or {}
    scored = float(df["time_s"].sum()) if "time_s" in df else float("nan")
    return {
        "run": run_dir.name, "command": s.get("command", ""), "evaluations": int(len(df)), "wall_s": wall,
        "evaluations_per_min": len(df) / (wall / 60) if wall == wall and wall > 0 else float("nan"),
        "objective_calls": s.get("n_calls"), "cache_hits": s.get("cache_hits"),
        "full_fidelity": int((df["fidelity"] >= 1).sum()) if "fidelity" in df else None,
        "objective_s": obj_s, "scoring_s": scored,
        "constraints": s.get("constraints", []), "created": s.get("created"),
    }


def table(rows: list[dict]) -> str:
    names = sorted({k for r in rows for k in r["objective_s"]})
    head = ["run", "evaluations", "wall time", "evaluations/min", "objective calls", "cache hits", "full-fidelity rows",
            *[f"share in {n}" for n in names], "other (optimiser, I/O, setup)"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        w = r["wall_s"]
        shares = [f"{100 * r['objective_s'][n] / w:.0f}%" if n in r["objective_s"] else "—" if r["objective_s"] else "not recorded"
                  for n in names]  # —: not an objective of that run
        other = f"{100 * (w - sum(r['objective_s'].values())) / w:.0f}%" if r["objective_s"] else "not recorded"
        cells = [f"`{r['run']}`", str(r["evaluations"]), f"{w / 60:.1f} min", f"{r['evaluations_per_min']:.1f}",
                 str(r["objective_calls"]), "not recorded" if r["cache_hits"] is None else str(r["cache_hits"]),
                 str(r["full_fidelity"]), *shares, other]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--note", default="", help="a sentence on how the runs were made (e.g. what else ran)")
    ap.add_argument("--add", action="store_true",
                    help="keep the rows of runs already in results/search_cost.json (their folders may be gone)")
    args = ap.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "run.json").is_file()]
    if missing:
        raise SystemExit(f"not finished search runs (no run.json): {', '.join(missing)}")
    rows = [cost(r) for r in args.runs]
    raw = RAW_DIR / "search_cost.json"
    if args.add and raw.is_file():
        old = json.loads(raw.read_text())
        new = {r["run"] for r in rows}
        rows = [r for r in old.get("runs", []) if r["run"] not in new] + rows
        args.note = args.note or old.get("note", "")  # a new --note replaces the old one (say what holds for all rows)
    info = machine()
    save_raw("search_cost", {"machine": info, "command": command_line(), "runs": rows, "note": args.note})
    md = [header("Search cost (issue 7)", info, command_line()), "",
          "Per run: distinct subnets scored, wall time of `nas-llm search` (model load and importance ranking excluded), "
          "cache hits = candidates the optimiser proposed again (answered from the run's table, not re-scored), and the "
          "share of the wall time spent inside each objective (screening and full-fidelity re-scoring together).", "",
          table(rows), ""]
    if args.note:
        md += [args.note, ""]
    md += ["Commands of the runs:", ""] + [f"- `{r['run']}`: `{r['command']}`" for r in rows]
    write_section("search_cost", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

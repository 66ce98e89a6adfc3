"""What ``--seed-margin 1.02`` (``SearchLoop.finish``: re-score at full fidelity every feasible allocation seed that
no other feasible row, at most as large, screens 1.02x better) does to finished runs, exactly: it runs after the
search loop and NSGA-II selects on the screening column only, so a run with the rule has the same rows as the
archived run plus these full-fidelity values. For each run: the seeds the rule re-scores (an independent
re-implementation of ``SearchProblem.outclassed`` on the archived rows), their full-fidelity validation value
(``perplexity_reformed``, 8 x 2048, float32; one problem serves every ratio: the band only decides feasibility), and
the pick before / after (lowest full-fidelity feasible value). Raw JSON beside this file.

    flock /tmp/nasllm-heavy.lock python benchmarks/experiments/seed_rescore/replay.py [--dry] RUN_DIR...
"""
import csv
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.search_speed import ROOT, problem, search_config  # noqa: E402
from search_spaces import Subnet  # noqa: E402

MARGIN = 1.02
OUT = Path(__file__).with_name("replay.json")


def full(r: dict) -> bool:
    return float(r["fidelity"]) >= 1


def feasible(r: dict) -> bool:
    return r["feasible"] in ("True", "true", "1")


def rescored(rows: list[dict]) -> list[dict]:
    """Feasible alloc seeds below full fidelity that no other feasible, no larger row screens MARGIN x better."""
    scr = "perplexity_reformed@0.125"
    out = []
    for r in rows:
        if r["source"] != "alloc" or not feasible(r) or full(r):
            continue
        if not any(o["key"] != r["key"] and feasible(o) and float(o["params_ratio"]) <= float(r["params_ratio"])
                   and float(o[scr]) * MARGIN <= float(r[scr]) for o in rows):
            out.append(r)
    return out


def pick(rows: list[dict], extra: dict[str, float]) -> tuple[str, float]:
    vals = [(extra.get(r["key"], float(r["perplexity_reformed"]) if full(r) else None), r["id"]) for r in rows
            if feasible(r) and (full(r) or r["key"] in extra)]
    v, i = min((v, int(i)) for v, i in vals if v is not None)
    return str(i), v


runs = [Path(a) for a in sys.argv[1:] if a != "--dry"]
todo = {run: rescored(list(csv.DictReader(open(run / "evaluations.csv")))) for run in runs}
print({run.name: [(r["id"], r["perplexity_reformed@0.125"]) for r in v] for run, v in todo.items()}, flush=True)
if "--dry" in sys.argv:  # only which seeds the rule re-scores
    raise SystemExit(0)
config = search_config(0.8, str(ROOT / "runs" / "_seed_rescore"), alloc=False)
sp = problem(config, 2)
obj = sp.objectives[0]
scored: dict[str, float] = {}
out = {"margin": MARGIN, "runs": {}}
for run in runs:
    rows = list(csv.DictReader(open(run / "evaluations.csv")))
    extra = {}
    for r in todo[run]:
        if r["key"] not in scored:
            t0 = time.perf_counter()
            scored[r["key"]] = obj.score(Subnet.from_json(r["subnet"]), sp.ctx)
            print(run.name, r["id"], r["perplexity_reformed@0.125"], "->", scored[r["key"]], f"{time.perf_counter() - t0:.1f} s",
                  flush=True)
        extra[r["key"]] = scored[r["key"]]
    before, after = pick(rows, {}), pick(rows, extra)
    out["runs"][run.name] = {"rescored": [{"id": r["id"], "params_ratio": float(r["params_ratio"]),
                                           "screen": float(r["perplexity_reformed@0.125"]), "full": extra[r["key"]]}
                                          for r in todo[run]],
                             "pick_before": {"id": before[0], "value": before[1]},
                             "pick_after": {"id": after[0], "value": after[1]}}
    print(run.name, out["runs"][run.name]["pick_before"], out["runs"][run.name]["pick_after"], flush=True)
OUT.write_text(json.dumps(out, indent=1))

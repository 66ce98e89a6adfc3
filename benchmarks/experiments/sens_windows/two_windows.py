"""Would a 2-window sensitivity table (half the measuring time) give the same allocation seeds as the 4-window default?
For each band's archived KL-default run (seed 0): the run's own settings with --sens-samples 2, table measured fresh
(no cache), seeds made by the search's own code; compared with the seeds that run.json records."""
import json, sys, time
from dataclasses import replace
from pathlib import Path
import numpy as np
from scipy.stats import spearmanr
from nas_llm.run import Run
from nas_llm.search.config import SearchConfig
from nas_llm.search.runner import build_problem, torch_threads, allocation_seeds
from objectives import Constraint

W = int(sys.argv[1]) if len(sys.argv) > 1 else 2
OUT = Path(__file__).with_name("two_windows.json") if W == 2 else Path(f"/tmp/sens_windows{W}.json")
RUNS = Path("/work/main/benchmarks/results/runs")
bands = ["s80k-0", "s70k-0", "s90k-0", "s60k-0", "s50k-0"]
base = json.load(open(RUNS / "s80k-0/run.json"))
cfg = replace(SearchConfig.from_json(base, out="/tmp/sens_windows/run"), progress=False)
res = {"windows": W, "rows": []}
with torch_threads(2):
    sp = build_problem(cfg, Run(cfg.out))
    for name in bands:
        rj = json.load(open(RUNS / name / "run.json"))
        old = json.load(open(RUNS / name / "sensitivity.json"))
        c = rj["constraints"][0]
        sp.constraints = [Constraint.parse(f"params_ratio in [{c['lo']},{c['hi']}]")]
        t0 = time.perf_counter()
        a = allocation_seeds(replace(cfg, sens_samples=W, sens_cache=False), sp, Run(f"/tmp/sens_windows/{name}-w{W}"))
        new = json.load(open(f"/tmp/sens_windows/{name}-w{W}/sensitivity.json"))
        old_keys = [m["key"] for m in rj["alloc"]["made"]]
        new_keys = [m["key"] for m in a["made"]]
        flat = lambda t: np.concatenate([np.ravel(t["mlp_cost"]), np.ravel(t["attn_cost"])])
        same_pts = old["mlp_widths"] == new["mlp_widths"] and old["kv_counts"] == new["kv_counts"]
        row = {"run": name, "seconds": round(time.perf_counter() - t0, 1), "table_s": a["sensitivity_s"],
               "old_table_s": old["seconds"], "same_points": same_pts,
               "spearman": float(spearmanr(flat(old), flat(new)).statistic) if same_pts else None,
               "max_rel": float(np.max(np.abs(flat(new) / flat(old) - 1))) if same_pts else None,
               "n_old": len(old_keys), "n_new": len(new_keys), "common": len(set(old_keys) & set(new_keys)),
               "new_only": [k for k in new_keys if k not in old_keys],
               "made": a["made"]}
        res["rows"].append(row)
        print(name, {k: v for k, v in row.items() if k not in ("made", "new_only")}, flush=True)
        OUT.write_text(json.dumps(res, indent=1))

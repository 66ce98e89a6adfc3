"""Blend sweep: allocations from the KL and ppl tables at several blends towards the median layer, scored at full fidelity."""
import json, math, sys, time
from dataclasses import replace
from pathlib import Path
import torch
from nas_llm.run import Run
from nas_llm.search.config import SearchConfig
from nas_llm.search.runner import build_problem, torch_threads
from nas_llm.search.sensitivity import Sensitivity, error_curves
from nas_llm.search.allocation import alloc_seeds

OUT = Path("/tmp/x/blend.json")
src = json.load(open("/work/main/benchmarks/results/runs/s70p4-0/run.json"))
cfg = replace(SearchConfig.from_json(src, out="/tmp/x/klrun"), progress=False, resume=True)
res = []
with torch_threads(2):
    sp = build_problem(cfg, Run(cfg.out))
    ctx, space = sp.ctx, sp.ctx.space
    obj = sp.objectives[0]
    probe = obj.with_windows(8, 256, dtype=None)
    me, ae = error_curves(probe, ctx)
    k = json.load(open("/tmp/x/kl8.json"))["kl"]
    kl = Sensitivity({}, k["widths"], k["kvs"], k["mlp"], k["attn"], me, ae)
    p70 = Sensitivity.from_json(json.load(open("/work/main/benchmarks/results/runs/s70p4-0/sensitivity.json")))
    p80 = Sensitivity.from_json(json.load(open("/work/main/benchmarks/results/runs/s80p4-0/sensitivity.json")))
    obj.setup(ctx)
    plan = [("70", 0.6876, 0.6576, [("kl", kl), ("ppl", p70)]), ("80", 0.8126, 0.7826, [("kl", kl), ("ppl", p80)])]
    seen = {}
    for band, r, lo, tables in plan:
        for tname, sens in tables:
            for attn in (math.inf, 1.0):
                for blend in (0.25, 0.5, 0.75):
                    w = [(f"a{attn}-b{blend}", attn, blend)]
                    made = alloc_seeds(space, sens.table(space), [r], floor=lo, weightings=w)
                    for s, info in made:
                        t = time.perf_counter()
                        v = seen.get(s.key()) or obj.score(s, ctx)
                        seen[s.key()] = v
                        row = {"band": band, "table": tname, "attn": attn, "blend": blend, **info, "key": s.key(), "val": v}
                        print(band, tname, attn, blend, info["params_ratio"], round(v, 3), round(time.perf_counter() - t, 1), flush=True)
                        res.append(row)
                        OUT.write_text(json.dumps(res, default=str))

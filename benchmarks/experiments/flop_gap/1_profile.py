"""Where a full-fidelity evaluation's time goes: torch.profiler over one `perplexity_reformed` score (2 x 2048 tokens,
float32, 2 threads, uniform 80 % subnet), grouped by op and input shape; each row's GFLOP/s where it is a product.
Writes 1_profile.json beside this script."""
import argparse, json, shlex, time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from nas_llm.run import Run
from nas_llm.search.config import SearchConfig, add_arguments
from nas_llm.search.runner import build_problem

cmd = ("--out /tmp/x/flopgap --model smollm2-135m --objectives perplexity_reformed,params_ratio --no-layer-drop "
       "--calibration wikitext2-valid --calib-samples 32 --calib-seq-len 256 --ppl-samples 2 --ppl-seq-len 2048 "
       "--head-chunk 256 --threads 2 --no-progress")
p = argparse.ArgumentParser()
add_arguments(p)
cfg = SearchConfig.from_args(p.parse_args(shlex.split(cmd)))
torch.set_num_threads(2)
sp = build_problem(cfg, Run(cfg.out))
sp.setup()
obj = sp.objectives[0]
u = sp.space.uniform_at_ratio(0.8, "mlp")
obj.weights_for(sp.ctx.plan(u), 0, sp.ctx)  # refit outside the timed call
obj.score(u, sp.ctx)
pc = obj.prefix_cache(sp.ctx)
pc.batch_nll.clear()
t0 = time.perf_counter()
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    obj.score(u, sp.ctx)
wall = time.perf_counter() - t0
rows = []
for e in prof.key_averages(group_by_input_shape=True):
    if e.self_cpu_time_total <= 0:
        continue
    shapes = e.input_shapes
    gf = None
    if e.key == "aten::mm" and len(shapes) >= 2 and len(shapes[0]) == 2 and len(shapes[1]) == 2:
        (m, k), (_, n) = shapes[0], shapes[1]
        gf = 2 * m * k * n * e.count / (e.self_cpu_time_total / 1e6) / 1e9
    if "scaled_dot_product" in e.key and shapes and len(shapes[0]) == 4:
        b, h, L, d = shapes[0]
        gf = 4 * b * h * d * L * (L + 1) / 2 * e.count / (e.self_cpu_time_total / 1e6) / 1e9  # causal pairs only
    rows.append({"op": e.key, "shapes": str(shapes), "calls": e.count, "self_s": e.self_cpu_time_total / 1e6, "gflops_per_s": gf})
rows.sort(key=lambda r: -r["self_s"])
total = sum(r["self_s"] for r in rows)
out = {"wall_s": wall, "self_total_s": total, "subnet": u.key(), "threads": 2, "windows": [2, 2048], "rows": rows[:25]}
Path(__file__).with_name("1_profile.json").write_text(json.dumps(out, indent=1))
for r in rows[:12]:
    print(f"{r['op'][:45]:45s} {r['shapes'][:60]:60s} {r['self_s']:7.3f} s {100 * r['self_s'] / total:5.1f}% "
          f"{'' if r['gflops_per_s'] is None else round(r['gflops_per_s'])}")

"""What the vocabulary blocks do to a search evaluation: the uniform 80 % subnet scored by `perplexity_reformed` at full
fidelity (8 x 2048 validation tokens, float32, 2 threads; the refit is cached after the first call, so only the forward
and the head are timed), with `VOCAB_CHUNK = 0` (the arithmetic before) and 2048 interleaved (A B A B A B), the
memoised window values cleared before every call; a GEMM throughput probe before every pair gives the FLOP-limit ratio
of that round (`benchmarks/search_speed.py flops`' limit). Raw JSON beside this file.

    flock /tmp/nasllm-heavy.lock python benchmarks/experiments/head_vocab_chunk/ab_objective.py
"""
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.search_speed import ROOT, eval_flops, gemm_throughput, problem, search_config  # noqa: E402
from nas_llm.model import metrics  # noqa: E402

OUT = Path(__file__).with_name("ab_objective.json")
config = search_config(0.8, str(ROOT / "runs" / "_speed_flops"), alloc=False)
sp = problem(config, 2)
obj = sp.objectives[0]
u = sp.space.uniform_at_ratio(0.8, "mlp")
obj.weights_for(sp.ctx.plan(u), 0, sp.ctx)
rows = []
for rnd in range(3):
    peak = gemm_throughput(2)
    for vc in (0, metrics.VOCAB_CHUNK if metrics.VOCAB_CHUNK else 2048):
        metrics.VOCAB_CHUNK = vc
        obj.prefix_cache(sp.ctx).batch_nll.clear()
        t0 = time.perf_counter()
        value = obj.score(u, sp.ctx)
        fwd = time.perf_counter() - t0
        f = eval_flops(sp.space, u, obj.rows, obj.seq_len, obj.last.get("start", 0))
        rows.append({"round": rnd, "vocab_chunk": vc, "forward_s": fwd, "gemm_gflops": peak / 1e9,
                     "ratio_to_limit": fwd / (f / peak), "value": value})
        print(rows[-1], flush=True)
OUT.write_text(json.dumps({"subnet": u.key(), "rows": rows}, indent=1))

"""What one reused logits buffer and an in-place logsumexp (``_logits_chunks`` and ``logsumexp_`` in
``metrics_buffer.py`` beside this file) do inside the search, interleaved against the head of main
(``nas_llm/model/metrics.py``, unchanged from commit 7585300 to 39be76d), 2 threads, each patched into
``nas_llm.model.metrics`` in turn, memoised window values cleared before every call:

- ``full``: the uniform 80 % subnet scored by ``perplexity_reformed`` at full fidelity (8 x 2048 validation tokens,
  float32; the refit is cached after the first call, so only the forward and the head are timed);
- ``screen``: the same subnet at the screening rung (1 window, bfloat16 autocast);
- ``table``: the sensitivity table's probe (``divergence`` on 4 x 256 tokens, float32) of three single-layer MLP cuts
  (layers 0 / 15 / 29 to 1152 neurons: prefix reuse makes the later ones cheaper).

Each value must be bit-identical between the two heads (checked). Raw JSON beside this file.

    flock /tmp/nasllm-heavy.lock python benchmarks/experiments/head_buffer/ab_objective.py
"""
import importlib.util
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.search_speed import ROOT, eval_flops, gemm_throughput, problem, search_config  # noqa: E402
from nas_llm.model import metrics  # noqa: E402
from search_spaces import Subnet  # noqa: E402



def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


before, buffer = metrics, _load("metrics_buffer")
HEADS = {"before": (before.head_row_nll, before.head_row_kl), "buffer": (buffer.head_row_nll, buffer.head_row_kl)}
# the buffered head_row_nll / head_row_kl look their helpers up in their own module, so patching main's names is enough

OUT = Path(__file__).with_name("ab_objective.json")
config = search_config(0.8, str(ROOT / "runs" / "_speed_head_buffer"), alloc=False)
sp = problem(config, 2)
obj = sp.objectives[0]
screen = obj.at_fidelity(0.125)
probe = obj.with_windows(4, 256)
probe.setup(sp.ctx)
u = sp.space.uniform_at_ratio(0.8, "mlp")
obj.weights_for(sp.ctx.plan(u), 0, sp.ctx)
dense = sp.space.dense().layers
cuts = [Subnet(tuple(replace(c, neurons=1152) if j == i else c for j, c in enumerate(dense))) for i in (0, 15, 29)]
for s in cuts:
    probe.weights_for(sp.ctx.plan(s), 0, sp.ctx)
probe.reference(sp.ctx)


def clear():
    for o in (obj, probe):
        o.prefix_cache(sp.ctx).batch_nll.clear()


def timed(fn):
    clear()
    t0 = time.perf_counter()
    v = fn()
    return time.perf_counter() - t0, v


rows = []
for rnd in range(3):
    peak = gemm_throughput(2)
    for name, (nll, kl) in HEADS.items():
        metrics.head_row_nll, metrics.head_row_kl = nll, kl
        t_full, v_full = timed(lambda: obj.score(u, sp.ctx))
        f = eval_flops(sp.space, u, obj.rows, obj.seq_len, obj.last.get("start", 0))
        t_screen, v_screen = timed(lambda: screen.score(u, sp.ctx))
        t_table, v_table = timed(lambda: [probe.divergence(s, sp.ctx) for s in cuts])
        rows.append({"round": rnd, "head": name, "full_s": t_full, "screen_s": t_screen, "table3_s": t_table,
                     "gemm_gflops": peak / 1e9, "full_ratio_to_limit": t_full / (f / peak),
                     "values": [v_full, v_screen, *v_table]})
        print(rows[-1], flush=True)
metrics.head_row_nll, metrics.head_row_kl = HEADS["before"]
same = all(r["values"] == rows[0]["values"] for r in rows)
print("bit-identical values:", same)
OUT.write_text(json.dumps({"subnet": u.key(), "bit_identical": same, "rows": rows}, indent=1))

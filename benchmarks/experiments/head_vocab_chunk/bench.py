"""The LM head's NLL and KL with vocabulary blocks (``nas_llm.model.metrics.VOCAB_CHUNK``) against the whole vocabulary
at once (0: the arithmetic before), at the search's token chunk (256), on SmolLM2's head shape (49152 x 576; random
weights: the speed does not depend on the values) and on 2048 tokens (one search window) and 1024 (one sensitivity
probe). Interleaved rounds (every variant once per round), torch.utils.benchmark, 2 threads; median of the rounds and
the spread. Also the largest relative difference of each variant's per-row value from the float64 reference.

    flock /tmp/nasllm-heavy.lock python benchmarks/experiments/head_vocab_chunk/bench.py
"""
import json
import platform
import sys
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from nas_llm.model import metrics

OUT = Path(__file__).with_name("bench.json")
torch.set_num_threads(2)
g = torch.Generator().manual_seed(0)
V, d, CHUNK, ROUNDS = 49152, 576, 256, 5
head = torch.nn.Linear(d, V, bias=False)
with torch.no_grad():
    head.weight.copy_(torch.randn(V, d, generator=g) * 0.05)
variants = [0, 1024, 2048, 4096]
rows = []
for n in (2048, 1024):
    hidden = torch.randn(1, n, d, generator=g)
    ids = torch.randint(0, V, (1, n), generator=g)
    ref_h = hidden + 0.1 * torch.randn(hidden.shape, generator=g)
    with torch.no_grad():
        pre = metrics.head_reference(ref_h, head, CHUNK)
        z = hidden[0, :-1].double() @ head.weight.double().T
        want_nll = (torch.logsumexp(z, -1) - z[torch.arange(n - 1), ids[0, 1:]]).sum()
        lp = torch.log_softmax(ref_h[0, :-1].double() @ head.weight.double().T, -1)
        want_kl = (lp.exp() * (lp - torch.log_softmax(z, -1))).sum()
    for what in ("nll", "kl"):
        times = {v: [] for v in variants}
        for _ in range(ROUNDS):
            for v in variants:
                metrics.VOCAB_CHUNK = v
                fn = (lambda: metrics.head_row_nll(hidden, head, ids, CHUNK)) if what == "nll" else \
                     (lambda: metrics.head_row_kl(hidden, pre, head, CHUNK))
                with torch.no_grad():
                    times[v].append(Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=1.0).median)
        for v in variants:
            metrics.VOCAB_CHUNK = v
            with torch.no_grad():
                got = metrics.head_row_nll(hidden, head, ids, CHUNK) if what == "nll" else metrics.head_row_kl(hidden, pre, head, CHUNK)
            want = want_nll if what == "nll" else want_kl
            ts = sorted(times[v])
            rows.append({"tokens": n, "what": what, "vocab_chunk": v, "median_ms": 1e3 * ts[len(ts) // 2],
                         "min_ms": 1e3 * ts[0], "max_ms": 1e3 * ts[-1],
                         "rel_diff_vs_float64": float(abs(float(got.sum()) - float(want)) / abs(float(want)))})
            print(rows[-1], flush=True)
        base = next(r["median_ms"] for r in rows if r["tokens"] == n and r["what"] == what and r["vocab_chunk"] == 0)
        for r in rows:
            if r["tokens"] == n and r["what"] == what:
                r["speedup_vs_whole"] = round(base / r["median_ms"], 3)
OUT.write_text(json.dumps({"machine": {"machine": platform.machine(), "processor": platform.processor(),
                                       "torch": torch.__version__, "threads": torch.get_num_threads()},
                           "command": " ".join(sys.argv), "rows": rows}, indent=1))

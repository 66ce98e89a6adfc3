"""LM-head reductions on 2048 tokens x 49152 vocab x 576 (fp32, 2 threads, torch.utils.benchmark): the project's
token-chunked head_row_nll against vocabulary-chunked (online logsumexp) and transposed products. Writes
2_head_variants.json beside this script."""
import json
from pathlib import Path

import torch
import torch.utils.benchmark as tb

from nas_llm.model.metrics import head_row_nll

torch.set_num_threads(2)
head = torch.nn.Linear(576, 49152, bias=False)
with torch.no_grad():
    head.weight.normal_(0, 0.05)
h = torch.randn(1, 2049, 576) * 3
ids = torch.randint(0, 49152, (1, 2049))


def vocab_chunks(hidden, head, ids, c):
    b, L, d = hidden.shape
    hh, tgt, W = hidden[:, :-1].reshape(-1, d), ids[:, 1:].reshape(-1), head.weight
    m, ssum = torch.full((hh.shape[0],), -float("inf")), torch.zeros(hh.shape[0])
    for s in range(0, W.shape[0], c):
        z = hh @ W[s : s + c].T
        nm = torch.maximum(m, z.amax(1))
        ssum, m = ssum * torch.exp(m - nm) + torch.exp(z - nm[:, None]).sum(1), nm
    return (m + ssum.log() - (hh * W[tgt]).sum(1)).double().view(b, L - 1).sum(1)


def transposed(hidden, head, ids, c):
    b, L, d = hidden.shape
    hh, tgt = hidden[:, :-1].reshape(-1, d), ids[:, 1:].reshape(-1)
    lse = torch.cat([torch.logsumexp(head.weight @ hh[s : s + c].T, 0) for s in range(0, hh.shape[0], c)])
    return (lse - (hh * head.weight[tgt]).sum(1)).double().view(b, L - 1).sum(1)


rows = []
with torch.no_grad():
    ref = head_row_nll(h, head, ids, 256)
    for name, f, arg in [("tokens 256 (project)", head_row_nll, 256), ("tokens 512", head_row_nll, 512),
                         ("vocab 2048", vocab_chunks, 2048), ("vocab 4096", vocab_chunks, 4096),
                         ("transposed 256", transposed, 256)]:
        v = f(h, head, ids, arg)
        t = tb.Timer("f(h, head, ids, a)", globals=dict(f=f, h=h, head=head, ids=ids, a=arg),
                     num_threads=2).blocked_autorange(min_run_time=3)
        rows.append({"variant": name, "median_ms": t.median * 1e3, "gflops_per_s": 2 * 2048 * 576 * 49152 / t.median / 1e9,
                     "max_rel_diff": float(((v - ref) / ref).abs().max())})
        print(rows[-1])
Path(__file__).with_name("2_head_variants.json").write_text(json.dumps(rows, indent=1))

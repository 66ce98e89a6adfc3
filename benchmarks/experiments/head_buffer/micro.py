"""Micro-benchmark of the LM head at 2 threads (plain timing loop, 7 interleaved rounds): F.linear + torch.logsumexp
against one reused out= buffer + in-place logsumexp, per 2048 rows, chunks of 256 / 128 rows; random weights of
SmolLM2's head shape. Output of the 2026-12-07 19:10 UTC run in README.md."""
import torch, time
torch.manual_seed(0); torch.set_num_threads(2)
F = torch.nn.functional
w = torch.randn(49152,576)*0.05
wt = w.t()
def lse_b(z):
    m = z.amax(-1, keepdim=True)
    s = z.sub_(m).exp_().sum(-1)
    return m.squeeze(-1) + s.log()
bufs = {}
def mm_buf(a):
    k = a.shape[0]
    if k not in bufs: bufs[k] = torch.empty(k, 49152)
    return torch.mm(a, wt, out=bufs[k])
V = {
 'N0 linear+logsumexp': lambda a,e: torch.logsumexp(F.linear(a,w),-1),
 'N1 linear+inplace': lambda a,e: lse_b(F.linear(a,w)),
 'N2 mm out=buf+inplace': lambda a,e: lse_b(mm_buf(a)),
 'K0 linear-e+logsumexp': lambda a,e: torch.logsumexp(F.linear(a,w)-e[:,None],-1),
 'K1 linear sub_ e inplace': lambda a,e: lse_b(F.linear(a,w).sub_(e[:,None])),
 'K3 buf sub_ e inplace': lambda a,e: lse_b(mm_buf(a).sub_(e[:,None])),
}
for M in (256, 128):
    a = torch.randn(M,576); e = torch.randn(M)
    res = {k: [] for k in V}
    for k,f in V.items(): f(a,e)
    for r in range(7):
        for k,f in V.items():
            t0=time.perf_counter()
            for _ in range(2048//M): f(a,e)
            res[k].append((time.perf_counter()-t0)*1e3)
    for k in V: print(M, k, 'median ms per 2048 rows %.1f' % sorted(res[k])[3], 'min %.1f' % min(res[k]))

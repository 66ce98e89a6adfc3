"""Experiment: per-layer sensitivity as mean KL(dense || cut) instead of the log-ppl change; seeds scored at full fidelity."""
import json, math, sys, time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
import torch
import objectives.perplexity as P
from nas_llm.run import Run
from nas_llm.search.config import SearchConfig
from nas_llm.search.runner import build_problem, torch_threads
from nas_llm.search.sensitivity import Sensitivity, probe_points, error_curves, _one_layer
from nas_llm.search.allocation import alloc_seeds
from nas_llm.search.population import seed_ratios
from search_spaces import Subnet

NS = int(sys.argv[1]) if len(sys.argv) > 1 else 8
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/x/kl_out.json")
src = json.load(open("/work/main/benchmarks/results/runs/s70p4-0/run.json"))
cfg = SearchConfig.from_json(src, out="/tmp/x/klrun")
cfg = replace(cfg, progress=False)
res = {"ns": NS}
with torch_threads(2):
    sp = build_problem(cfg, Run(cfg.out))
    ctx, space = sp.ctx, sp.ctx.space
    obj = sp.objectives[0]
    print(obj.name, flush=True)
    probe = obj.with_windows(NS, 256, dtype=None)
    probe.setup(ctx)
    ids = probe.ids(ctx)
    head = ctx.model.get_output_embeddings()
    with torch.no_grad():
        ref = ctx.model.base_model(input_ids=ids, use_cache=False).last_hidden_state.detach().clone()

    def kl_rows(model, x, head_chunk=256):
        h = model.base_model(input_ids=x, use_cache=False).last_hidden_state
        b, L, d = h.shape
        assert b == ref.shape[0]
        hc, rc = h[:, :-1].reshape(-1, d), ref[:, :-1].reshape(-1, d)
        out = torch.empty(hc.shape[0], dtype=torch.float64)
        for s in range(0, hc.shape[0], 256):
            lq = torch.log_softmax(head(hc[s:s+256]).float(), -1)
            lp = torch.log_softmax(head(rc[s:s+256]).float(), -1)
            out[s:s+256] = (lp.exp() * (lp - lq)).sum(-1).double()
        return out.view(b, L - 1).sum(1)

    ratios = list(seed_ratios(sp.constraints))
    n = space.neuron_choices
    depth = round(min(max(0.5, 2 * (1 - space.uniform_at_ratio(min(ratios), "mlp").layers[0].neurons / n[-1])), 1 - n[0] / n[-1]), 6)
    widths, kvs = probe_points(space, 4, depth)
    print("depth", depth, widths, kvs, flush=True)
    t0 = time.perf_counter()
    orig = P.row_nll
    P.row_nll = kl_rows
    try:
        L = space.num_layers
        mlp = [[math.log(probe.score(_one_layer(space, i, neurons=w), ctx)) for w in widths] for i in range(L)]
        attn = [[math.log(probe.score(_one_layer(space, i, kv_groups=g), ctx)) for g in kvs] for i in range(L)]
    finally:
        P.row_nll = orig
    res["kl_seconds"] = time.perf_counter() - t0
    print("kl table", res["kl_seconds"], flush=True)
    me, ae = error_curves(probe, ctx)
    kl = Sensitivity({}, widths, kvs, mlp, attn, me, ae)
    res["kl"] = {"mlp": mlp, "attn": attn, "widths": widths, "kvs": kvs}
    old = Sensitivity.from_json(json.load(open("/work/main/benchmarks/results/runs/s70p4-0/sensitivity.json")))
    full = obj  # 8 x 2048 validation, the search's full fidelity
    full.setup(ctx)
    bands = {"70": (0.6576, 0.6876), "80": (0.7826, 0.8126)}
    res["seeds"] = []
    for band, (lo, hi) in bands.items():
        from nas_llm.search.population import ratios_within
        rs = list(ratios_within(lo, hi))
        rs += [space.ratio(u) for u in {space.uniform_at_ratio(r, "mlp") for r in rs} if lo <= space.ratio(u) <= hi]
        rs = sorted(set(rs))
        tables = [("kl", kl)] + ([("ppl70", old)] if band == "70" else [])
        for tname, sens in tables:
            for s, info in alloc_seeds(space, sens.table(space), rs, floor=lo):
                t = time.perf_counter()
                v = full.score(s, ctx)
                row = {"band": band, "table": tname, **info, "key": s.key(), "val": v, "s": time.perf_counter() - t}
                print(row["band"], tname, info, round(v, 3), round(row["s"], 1), flush=True)
                res["seeds"].append(row)
                OUT.write_text(json.dumps(res))

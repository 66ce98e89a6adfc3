"""(a) KL table, 2-point subset (832/128, kv 2/1) of the 8-window table; (b) a 4-window KL table (p4 and its p2 subset).
Seeds: heads whole, blends 0.25/0.5/0.75, at 70 % (0.6876) and 80 % (0.8126), scored at full fidelity."""
import json, math, sys, time
from dataclasses import replace
from pathlib import Path
import torch
import objectives.perplexity as P
from nas_llm.run import Run
from nas_llm.search.config import SearchConfig
from nas_llm.search.runner import build_problem, torch_threads
from nas_llm.search.sensitivity import Sensitivity, error_curves, _one_layer
from nas_llm.search.allocation import alloc_seeds

OUT = Path("/tmp/x/kl2.json")
src = json.load(open("/work/main/benchmarks/results/runs/s70p4-0/run.json"))
cfg = replace(SearchConfig.from_json(src, out="/tmp/x/klrun"), progress=False)
res = {"rows": []}
def sub(t, keep_w):
    idx = [t["widths"].index(w) for w in keep_w]
    return {"widths": keep_w, "kvs": t["kvs"], "mlp": [[r[j] for j in idx] for r in t["mlp"]], "attn": t["attn"]}
with torch_threads(2):
    sp = build_problem(cfg, Run(cfg.out))
    ctx, space = sp.ctx, sp.ctx.space
    obj = sp.objectives[0]
    probe = obj.with_windows(4, 256, dtype=None)
    probe.setup(ctx)
    me, ae = error_curves(probe, ctx)
    ids = probe.ids(ctx)
    head = ctx.model.get_output_embeddings()
    with torch.no_grad():
        ref = ctx.model.base_model(input_ids=ids, use_cache=False).last_hidden_state.detach().clone()
    def kl_rows(model, x, head_chunk=256):
        h = model.base_model(input_ids=x, use_cache=False).last_hidden_state
        b, L, d = h.shape
        hc, rc = h[:, :-1].reshape(-1, d), ref[:, :-1].reshape(-1, d)
        out = torch.empty(hc.shape[0], dtype=torch.float64)
        for s in range(0, hc.shape[0], 256):
            lq = torch.log_softmax(head(hc[s:s+256]).float(), -1)
            lp = torch.log_softmax(head(rc[s:s+256]).float(), -1)
            out[s:s+256] = (lp.exp() * (lp - lq)).sum(-1).double()
        return out.view(b, L - 1).sum(1)
    widths, kvs = [1152, 832, 448, 128], [2, 1]
    t0 = time.perf_counter()
    orig, P.row_nll = P.row_nll, kl_rows
    try:
        L = space.num_layers
        mlp = [[math.log(probe.score(_one_layer(space, i, neurons=w), ctx)) for w in widths] for i in range(L)]
        attn = [[math.log(probe.score(_one_layer(space, i, kv_groups=g), ctx)) for g in kvs] for i in range(L)]
    finally:
        P.row_nll = orig
    res["kl4_seconds"] = time.perf_counter() - t0
    print("kl4 table", res["kl4_seconds"], flush=True)
    kl4 = {"widths": widths, "kvs": kvs, "mlp": mlp, "attn": attn}
    res["kl4"] = kl4
    kl8 = json.load(open("/tmp/x/kl8.json"))["kl"]
    tables = [("kl8p2", sub(kl8, [832, 128])), ("kl4p4", kl4), ("kl4p2", sub(kl4, [832, 128]))]
    obj.setup(ctx)
    seen = {}
    for band, r, lo in (("70", 0.6876, 0.6576), ("80", 0.8126, 0.7826)):
        for tname, t in tables:
            sens = Sensitivity({}, t["widths"], t["kvs"], t["mlp"], t["attn"], me, ae)
            for blend in (0.25, 0.5, 0.75):
                for s, info in alloc_seeds(space, sens.table(space), [r], floor=lo, weightings=[("b", math.inf, blend)]):
                    t1 = time.perf_counter()
                    v = seen.get(s.key()) or obj.score(s, ctx)
                    seen[s.key()] = v
                    print(band, tname, blend, info["params_ratio"], round(v, 3), round(time.perf_counter() - t1, 1), flush=True)
                    res["rows"].append({"band": band, "table": tname, "blend": blend, **info, "key": s.key(), "val": v})
                    OUT.write_text(json.dumps(res))

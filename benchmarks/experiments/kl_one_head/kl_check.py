import argparse, time, shlex, json
from nas_llm.search.config import SearchConfig, add_arguments
from nas_llm.search.runner import build_problem
from nas_llm.run import Run
import nas_llm.search.sensitivity as S
import nas_llm.model.metrics as M
import torch
cmd = "--out /tmp/x/profrun --model smollm2-135m --objectives perplexity_reformed,params_ratio --no-layer-drop --calibration wikitext2-valid --calib-samples 32 --calib-seq-len 256 --ppl-samples 8 --ppl-seq-len 2048 --head-chunk 256 --threads 2 --no-progress"
p = argparse.ArgumentParser(); add_arguments(p)
cfg = SearchConfig.from_args(p.parse_args(shlex.split(cmd)))
torch.set_num_threads(2)
sp = build_problem(cfg, Run(cfg.out)); sp.setup()
obj = sp.objectives[0]; probe = obj.with_windows(4, 256, dtype=None); probe.setup(sp.ctx)
space = sp.space; ctx = sp.ctx
widths, kvs = S.probe_points(space, 4, 0.917)
cuts = [(i, "neurons", w) for i in (0, 5, 10, 15, 20, 25, 29) for w in (widths[0], widths[-1])] + [(i, "kv_groups", 2) for i in (0, 14, 29)]
def old_head_row_kl(hidden, ref, head, chunk=256):
    b, L, d = hidden.shape
    h, r = hidden[:, :-1].reshape(-1, d), ref[:, :-1].reshape(-1, d)
    out = torch.empty(h.shape[0], dtype=torch.float64)
    for s in range(0, h.shape[0], chunk):
        logq = torch.log_softmax(head(h[s:s+chunk]).float(), -1); logp = torch.log_softmax(head(r[s:s+chunk]).float(), -1)
        out[s:s+chunk] = (logp.exp() * (logp - logq)).sum(-1).double()
    return out.view(b, L - 1).sum(1)
def old_row_kl(model, ids, ref, head_chunk=256):
    return old_head_row_kl(M.final_hidden(model, ids), ref, model.get_output_embeddings(), head_chunk)
with torch.no_grad():
    ids = probe.ids(ctx)
    old_ref = [M.final_hidden(ctx.model, ids)]
def run(tag):
    pc = probe.prefix_cache(ctx); pc.batch_nll.clear()
    vals, t0 = [], time.perf_counter()
    for i, what, v in cuts:
        vals.append(probe.divergence(S._one_layer(space, i, **{what: v}), ctx))
    return vals, time.perf_counter() - t0
probe.reference(ctx)
res = {}
for rep in range(2):
    new_v, new_t = run("new")
    orig_ref, orig_rk = probe.reference, M.row_kl
    probe.reference = lambda ctx: old_ref; M.row_kl = old_row_kl
    old_v, old_t = run("old")
    probe.reference, M.row_kl = orig_ref, orig_rk
    print(f"rep {rep}: new {new_t:.1f} s  old {old_t:.1f} s  ratio {new_t/old_t:.3f}")
    res.setdefault("new_s", []).append(new_t); res.setdefault("old_s", []).append(old_t)
rel = [abs(a - b) / b for a, b in zip(new_v, old_v)]
print("max rel diff", max(rel), "min cost", min(old_v))
for c, a, b in zip(cuts, new_v, old_v): print(c, f"{a:.8f} {b:.8f}")
json.dump({"cuts": cuts, "new": new_v, "old": old_v, **res, "max_rel": max(rel)}, open("/tmp/x/kl_check.json", "w"), indent=1)

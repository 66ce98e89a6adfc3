"""Issue 3 GPU benchmark: sliced LLaMA-7B / Llama-3-8B-shaped random bf16 models on one GPU.

For the dense model and several sliced subnets (uniform at ~90/80/70/50 % decoder params and two
non-uniform ones with dropped layers): prefill (batch 1, --seq tokens) and decode per token after a
--seq-token prompt, eager and compiled (static cache + torch.compile "reduce-overhead", i.e. CUDA
graphs), the realised speedup against the ideal 1/param-ratio, and the lookup-table / roofline
predictors' Spearman and MAPE against measurement on random subnets.

Random weights (``from_config``), nothing downloaded. Every step writes the JSON again, so a run
cut off by its time limit still returns what it measured.

    python benchmarks/latency_gpu.py --shape llama7b --out $OUT          # on the GPU machine
    python benchmarks/latency_gpu.py --tiny --out /tmp/gpu_dbg           # CPU dry run of the code path
    python benchmarks/latency_gpu.py --collect DIR                       # merge JSONs into RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {
    "llama7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                    intermediate_size=11008, vocab_size=32000),
    "llama3-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=14336, vocab_size=128256, rope_theta=500000.0),
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=384, vocab_size=512),
}


def build_model(shape: str, device, dtype):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=8192, tie_word_embeddings=False)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype, attn_implementation="sdpa")
    return model.eval()


def subnets(space, rng):
    """Dense, uniform at ~0.9/0.8/0.7/0.5 decoder params, and two non-uniform ones with dropped layers."""
    from search_spaces import LayerChoice, Subnet

    L, d = space.num_layers, space.dims
    out = {"dense": space.dense()}
    for r in (0.9, 0.8, 0.7, 0.5):
        out[f"uniform{int(r * 100)}"] = space.uniform_at_ratio(r, mode="both")
    # A: drop 4 late-middle layers (ShortGPT-style), MLP at ~75 % elsewhere
    n75 = min(space.neuron_choices, key=lambda n: abs(n - 0.75 * d.intermediate))
    drop = set(range(int(L * 0.6), int(L * 0.6) + max(1, L // 8)))
    out["nonuniform_drop"] = Subnet(tuple(LayerChoice(d.num_kv_heads, n75, i not in drop) for i in range(L)))
    # B: per-layer varied widths, wider at the ends, 2 dropped layers
    layers = []
    for i in range(L):
        edge = i < L // 8 or i >= L - L // 8
        kv = d.num_kv_heads if edge else max(1, int(rng.integers(d.num_kv_heads // 2, d.num_kv_heads + 1)))
        n = d.intermediate if edge else int(rng.choice(space.neuron_choices[len(space.neuron_choices) // 3:]))
        layers.append(LayerChoice(kv, n, i not in (L // 2, L // 2 + 1) or L < 4))
    out["nonuniform_mixed"] = Subnet(tuple(layers))
    return out


def sample_spread(space, rng):
    """See :func:`objectives.validation.sample_spread` (subnets spread over param ratios ~0.2-1)."""
    from objectives.validation import sample_spread as f

    return f(space, rng)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama7b", choices=list(SHAPES))
    ap.add_argument("--tiny", action="store_true", help="CPU dry run with a tiny fp32 config")
    ap.add_argument("--out", default=None)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--budget-s", type=float, default=420, help="skip remaining steps after this many seconds")
    ap.add_argument("--compiled", default="dense,uniform70,uniform50,nonuniform_mixed",
                    help="subnets to also time with compiled decode ('' for none)")
    ap.add_argument("--lut-n", type=int, default=10, help="random subnets for the predictor validation (0 skips)")
    ap.add_argument("--collect", default=None, help="merge JSON files from this folder into benchmarks/RESULTS.md")
    args = ap.parse_args()
    if args.collect:
        return collect(Path(args.collect))

    import torch

    from objectives.latency import measure_latency, mape, spearman
    from objectives import LookupTablePredictor, RooflinePredictor, checked_predict
    from nas_llm.model.slicing import slice_model
    from search_spaces import Ranking, SubnetSpace

    t0 = time.time()
    tiny = args.tiny
    shape = "tiny" if tiny else args.shape
    dev = "cpu" if tiny else "cuda"
    dtype = torch.float32 if tiny else torch.bfloat16
    seq = 64 if tiny else args.seq
    mrt = 0.05 if tiny else 0.5
    torch._dynamo.config.cache_size_limit = 64
    torch._dynamo.config.automatic_dynamic_shapes = False  # per-model static shapes; no slow dynamic kernels
    out_dir = Path(args.out or "/tmp/latency_gpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    import transformers

    res: dict = {"shape": shape, "config": SHAPES[shape], "dtype": str(dtype), "seq": seq,
                 "torch": torch.__version__, "transformers": transformers.__version__,
                 "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "subnets": {}, "errors": []}
    path = out_dir / f"latency_gpu_{shape}.json"

    def save() -> None:
        res["elapsed_s"] = time.time() - t0
        path.write_text(json.dumps(res, indent=1, default=str))

    def left() -> float:
        return args.budget_s - (time.time() - t0)

    model = build_model(shape, dev, dtype)
    space = SubnetSpace.from_model(model, 64 if not tiny else 32)
    d = space.dims
    rank = Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate)
    rng = np.random.default_rng(0)
    cands = subnets(space, rng)
    compiled = [s for s in args.compiled.split(",") if s]
    print(f"{res['device']} {shape} built in {time.time() - t0:.1f}s", flush=True)
    for name, sn in cands.items():
        if left() < 30:
            res["errors"].append(f"skipped {name}: time budget")
            break
        rec = {"subnet": sn.to_dict(), "summary": sn.summary(), "params_ratio": space.ratio(sn),
               "params_ratio_total": space.ratio(sn, decoder_only=False)}
        res["subnets"][name] = rec
        m = model if name == "dense" else slice_model(model, rank.resolve(sn), subnet=sn)
        try:
            for mode in ("prefill", "decode"):
                rec[mode] = measure_latency(m, mode, 1, seq, min_run_time=mrt, rounds=2).to_dict()
            if name in compiled and left() > 60:
                torch._dynamo.reset()
                from torch._dynamo.utils import counters

                counters.clear()
                tc = time.time()
                r = measure_latency(m, "decode", 1, seq, compiled=True, min_run_time=mrt, warmup=3, rounds=2)
                rec["decode_compiled"] = r.to_dict()
                rec["compile_and_measure_s"] = time.time() - tc
                rec["dynamo_stats"] = {k: dict(v) for k, v in counters.items() if k in ("stats", "graph_break", "recompiles")}
        except Exception as e:  # keep going: one failure must not lose the other numbers
            res["errors"].append(f"{name}: {type(e).__name__}: {e}")
            traceback.print_exc()
        if m is not model:
            del m
        if dev == "cuda":
            torch.cuda.empty_cache()
        dense = res["subnets"]["dense"]
        for key in ("prefill", "decode", "decode_compiled"):
            if key in rec and key in dense:
                rec[f"{key}_speedup"] = dense[key]["median_s"] / rec[key]["median_s"]
        rec["ideal_speedup"] = 1 / rec["params_ratio"]
        print(name, {k: round(v["median_ms"], 3) for k, v in rec.items() if isinstance(v, dict) and "median_ms" in v},
              f"ratio {rec['params_ratio']:.3f}", flush=True)
        save()

    # predictors vs measurement on random subnets
    if args.lut_n and left() > 120:
        val: dict = {}
        res["validation"] = val
        try:
            stride = 1 if tiny else 8
            preds = {}
            for mode in ("prefill", "decode"):
                tl = time.time()
                lut = LookupTablePredictor(mode=mode, seq_len=seq, neuron_stride=stride, rounds=2,
                                           min_run_time=0.05 if tiny else 0.15, cache_dir=out_dir / "cache",
                                           granularity=space.granularity, progress=False)
                lut.setup(model)
                roof = RooflinePredictor(mode=mode, seq_len=seq, cache_dir=out_dir / "cache")
                roof.setup(model)
                preds[mode] = {"lut": lut, "roofline": roof}
                val[f"lut_build_{mode}_s"] = time.time() - tl
                val[f"roofline_peaks"] = roof.peaks
                save()
                print(f"lut {mode} built in {time.time() - tl:.1f}s", flush=True)
            rows = []
            for i in range(args.lut_n):
                if left() < 20:
                    res["errors"].append(f"validation stopped after {i} subnets: time budget")
                    break
                sn = sample_spread(space, rng)
                m = slice_model(model, rank.resolve(sn))
                row = {"subnet": sn.to_dict(), "params_ratio": space.ratio(sn)}
                for mode in ("prefill", "decode"):
                    row[mode] = measure_latency(m, mode, 1, seq, min_run_time=mrt / 2).median_s
                    for pn, p in preds[mode].items():
                        row[f"{mode}_{pn}"] = checked_predict(p, sn)
                del m
                rows.append(row)
            val["rows"] = rows
            for mode in ("prefill", "decode"):
                meas = [r[mode] for r in rows]
                for pn in ("lut", "roofline"):
                    pr = [r[f"{mode}_{pn}"] for r in rows]
                    val[f"{mode}_{pn}"] = {"spearman": spearman(pr, meas), "mape": mape(pr, meas), "n": len(rows)}
            print({k: v for k, v in val.items() if k.startswith(("prefill_", "decode_"))}, flush=True)
        except Exception as e:
            res["errors"].append(f"validation: {type(e).__name__}: {e}")
            traceback.print_exc()
    save()
    print(f"done in {time.time() - t0:.1f}s -> {path}", flush=True)
    return 0


def collect(folder: Path) -> int:
    """Copy raw JSONs to benchmarks/results/ and write the RESULTS.md section."""
    from benchmarks._results import save_raw, write_section

    parts = ["## Latency on GPU (issue 3): sliced LLaMA-shaped random bf16 models\n"]
    for f in sorted(folder.glob("latency_gpu_*.json")):
        r = json.loads(f.read_text())
        save_raw(f.stem, r)
        parts.append(f"### {r['shape']} ({r['config']['hidden_size']} hidden, {r['config']['num_hidden_layers']} layers, "
                     f"{r['config']['num_attention_heads']} q / {r['config']['num_key_value_heads']} kv heads, MLP "
                     f"{r['config']['intermediate_size']}) on {r['device']}\n")
        parts.append(f"`python benchmarks/latency_gpu.py --shape {r['shape']} --out $OUT` (via the device tool), torch "
                     f"{r['torch']}, transformers {r['transformers']}, {r['dtype']}, prefill batch 1 x {r['seq']} tokens, "
                     f"decode per token after a {r['seq']}-token prompt. Median over 2 rounds of "
                     f"`blocked_autorange`; IQR in brackets. Speedup = dense / subnet; ideal = 1 / decoder-param ratio.\n")
        parts.append("| subnet | params ratio | prefill ms | decode eager ms/tok | decode compiled ms/tok | "
                     "speedup prefill / eager / compiled | ideal |")
        parts.append("|---|---|---|---|---|---|---|")
        for name, s in r["subnets"].items():
            def cell(k):
                return f"{s[k]['median_ms']:.2f} ({s[k]['iqr_ms']:.2f})" if k in s else "-"

            def sp(k):
                return f"{s[k]:.2f}" if k in s else "-"

            parts.append(f"| {name} | {s['params_ratio']:.3f} | {cell('prefill')} | {cell('decode')} | "
                         f"{cell('decode_compiled')} | {sp('prefill_speedup')} / {sp('decode_speedup')} / "
                         f"{sp('decode_compiled_speedup')} | {s.get('ideal_speedup', 0):.2f} |")
        v = r.get("validation") or {}
        if any(k.startswith("prefill_") for k in v):
            rr = [row["params_ratio"] for row in v.get("rows", [])]
            sampler = ("`space.sample` (independent layers, p_drop 0.1)" if rr and max(rr) - min(rr) < 0.25
                       else "`sample_spread` (sizes spread over the space)")
            parts.append(f"\nPredictors vs measurement on {len(rr)} random subnets drawn with {sampler}, decoder "
                         f"param ratios {min(rr, default=0):.2f}-{max(rr, default=0):.2f}; eager, one "
                         f"`blocked_autorange` each. LUT: probe of 4 layers, every KV-group count, every 8th "
                         f"neuron count (interpolated), 2 interleaved rounds.\n")
            parts.append("| mode | predictor | n | Spearman | MAPE % |\n|---|---|---|---|---|")
            for mode in ("prefill", "decode"):
                for pn in ("lut", "roofline"):
                    x = v.get(f"{mode}_{pn}")
                    if x:
                        parts.append(f"| {mode} | {pn} | {x['n']} | {x['spearman']:.3f} | {x['mape']:.1f} |")
            if "roofline_peaks" in v:
                pk = v["roofline_peaks"]
                parts.append(f"\nMeasured peaks: {pk['flops_per_s'] / 1e12:.0f} TFLOP/s matmul, "
                             f"{pk['bytes_per_s'] / 1e12:.2f} TB/s copy, {pk['op_overhead_s'] * 1e6:.1f} us per tiny op. "
                             f"LUT build: prefill {v.get('lut_build_prefill_s', 0):.0f} s, decode {v.get('lut_build_decode_s', 0):.0f} s.")
        if r.get("errors"):
            parts.append("\nErrors / skipped: " + "; ".join(r["errors"]))
        parts.append("")
    write_section("latency_gpu", "\n".join(parts))
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

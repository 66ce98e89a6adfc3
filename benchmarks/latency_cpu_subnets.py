"""CPU latency of every subnet of the quality table: prefill and decode, speedup vs dense and vs ideal.

The subnets are read from the quality benchmark's raw JSON (``benchmarks/results/quality-main.json``:
each row stores its subnet and resolved plan), sliced from the dense SmolLM2 and timed with
``objectives.latency.measure_interleaved``: every round times dense and all subnets in turn
(A B C ... A B C ...), so drifts of this shared machine hit all alike; we report the median of
the round medians and the IQR of all timed calls. Latency depends only on shapes, so rows with
the same subnet share one measurement (magnitude / wanda-sp / wanda-sp+admm are the same uniform
shapes; ``ours`` and ``ours+admm`` too); FLAP's bias compensation adds biases to o_proj/down_proj,
which are added (zeros) to its sliced model so the compute is the real one.

    flock /tmp/nasllm-heavy.lock python benchmarks/latency_cpu_subnets.py
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import RAW_DIR, command_line, header, machine, save_raw, unpack_plan, write_section  # noqa: E402


def groups(quality: dict) -> dict[str, dict]:
    """Distinct (subnet, bias) shapes of the quality rows: name -> {methods, ratio, plan, subnet, bias}."""
    out: dict[str, dict] = {}
    for key, row in quality["rows"].items():
        if "plan" not in row:
            continue
        method, _, ratio = key.partition("@")
        bias = row.get("reform") in ("bias", "bias-dense")  # FLAP's compensation biases (in-our-space and faithful)
        ident = json.dumps([row["subnet"], bias], sort_keys=True)
        g = out.setdefault(ident, {"methods": [], "ratio": float(ratio), "params_ratio": row["params_ratio"],
                                   "plan": row["plan"], "subnet": row["subnet"], "bias": bias})
        g["methods"].append(method)
    return {f"{'/'.join(g['methods'])}@{g['ratio']:g}": g for g in sorted(out.values(), key=lambda g: (-g["ratio"], g["methods"]))}


def builder(model, g: dict | None):
    from nas_llm.model.slicing import slice_model
    from search_spaces import Plan, Subnet, get_family

    def build():
        if g is None:
            return model
        m = slice_model(model, Plan.from_dict(unpack_plan(g["plan"])), subnet=Subnet.from_dict(g["subnet"]))
        if g["bias"]:
            fam = get_family(m)
            for layer in fam.decoder_layers(m):
                for lin in (fam.attn_linears(layer)["o"], fam.mlp_linears(layer)["down"]):
                    if lin.bias is None:
                        lin.bias = torch.nn.Parameter(torch.zeros(lin.out_features, dtype=lin.weight.dtype))
        return m.eval()

    return build


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quality", type=Path, default=RAW_DIR / "quality-main.json")
    p.add_argument("--prefill-len", type=int, default=256, help="prompt tokens timed in prefill (batch 1)")
    p.add_argument("--context", type=int, default=256, help="KV-cache length before the timed decode token")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-run-time", type=float, default=0.3, help="seconds of timed calls per model per round")
    p.add_argument("--only", nargs="*", default=None, help="subset of group names (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the other core stays free for the OS)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from nas_llm import load_model
    from objectives.latency import measure_interleaved

    quality = json.loads(args.quality.read_text())
    gs = groups(quality)
    if args.only:
        gs = {k: v for k, v in gs.items() if k in args.only}
    if not gs:
        raise SystemExit(f"{args.quality} holds no subnets; run benchmarks/quality.py first")
    model, _ = load_model("smollm2-135m")
    model.eval()
    builders = {"dense": builder(model, None), **{k: builder(model, g) for k, g in gs.items()}}
    res = {}
    for mode, n in (("prefill", args.prefill_len), ("decode", args.context)):
        res[mode] = measure_interleaved(builders, mode=mode, batch=1, seq_len=n, rounds=args.rounds, min_run_time=args.min_run_time)

    info = machine()
    rows = {}
    for name in builders:
        g = gs.get(name)
        r = 1.0 if g is None else g["params_ratio"]
        row = {"params_ratio": r, "ideal_speedup": 1 / r, "methods": ["dense"] if g is None else g["methods"],
               "target_ratio": 1.0 if g is None else g["ratio"]}
        for mode in res:
            lr = res[mode][name]
            row[mode] = lr.to_dict()
            row[f"{mode}_speedup"] = res[mode]["dense"].median_s / lr.median_s
        rows[name] = row
    cmd = command_line()
    save_raw("latency-cpu-subnets", {"machine": info, "command": cmd, "settings": vars(args) | {"quality": str(args.quality)}, "rows": rows})

    md = [header("Latency on this CPU: every subnet of the quality table", info, f"flock /tmp/nasllm-heavy.lock {cmd}")]
    md.append(f"fp32, batch 1, eager, {args.threads} torch thread(s). Prefill: {args.prefill_len} tokens, last-position logits. Decode: one token after a "
              f"{args.context}-token KV cache (ms per token). Median of {args.rounds} interleaved rounds (dense and all "
              f"subnets timed in turn each round); IQR over all timed calls. Speedup = dense median / subnet median; "
              f"ideal = 1 / decoder-param ratio (embeddings and LM head, 28M of 135M params, are not pruned, so the "
              f"whole-model ideal is lower). Subnets that share shapes share a row.\n")
    md.append("| subnet (methods@target) | decoder params | prefill ms (IQR) | prefill speedup | decode ms/tok (IQR) | decode speedup | ideal |")
    md.append("|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        pf, dc = row["prefill"], row["decode"]
        md.append(f"| {name} | {100 * row['params_ratio']:.1f}% | {pf['median_ms']:.1f} ({pf['iqr_ms']:.1f}) | {row['prefill_speedup']:.2f}x | "
                  f"{dc['median_ms']:.2f} ({dc['iqr_ms']:.2f}) | {row['decode_speedup']:.2f}x | {row['ideal_speedup']:.2f}x |")
    spreads = [row[m]["spread"] for row in rows.values() for m in ("prefill", "decode")]
    md.append(f"\nRound-to-round spread (max-min)/median: median {statistics.median(spreads):.0%}, max {max(spreads):.0%}. "
              "Read a difference between two rows as noise when it is within their own spreads (the table's IQR "
              "and this round-to-round spread), whatever caused them on the day.")
    write_section("latency-cpu-subnets", "\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

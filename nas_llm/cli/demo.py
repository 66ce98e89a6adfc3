"""``nas-llm demo``: the quick start on the embedded SmolLM2-135M, end to end in a few minutes on a CPU.

importance ranking (Wanda-sp, WikiText-2 valid) -> small NSGA-II search inside a size band just below the
budget, ranking candidates by what reformation will make of them (``perplexity_reformed``), first generation
seeded with uniform Wanda-sp subnets and per-layer sensitivity allocations, successive halving over the
calibration windows -> ADMM reformation of the best point within the budget -> export -> reload with stock
transformers classes -> WikiText-2 test perplexity of dense vs the exported subnet -> the subnet and the
dense model as GGUFs in llama.cpp: a generated sentence and decode tokens/s of each.
``--no-search`` slices a fixed ~80% subnet instead of searching.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

EPILOG = """examples:
  nas-llm demo
  nas-llm demo --out runs/demo --evaluations 48 --max-params-ratio 0.8
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="built-in name, HF folder, .gguf file or hub id")
    p.add_argument("--out", default="runs/demo", help="run folder (the export goes to OUT/export)")
    p.add_argument("--evaluations", type=int, default=32, help="search budget (evaluated subnets)")
    p.add_argument("--no-search", action="store_true", help="skip the search: slice a fixed ~80%% subnet")
    p.add_argument("--test-windows", type=int, default=4, help="WikiText-2 test windows of 512 tokens for the final ppl")
    p.add_argument("--max-params-ratio", type=float, default=0.85, help="deployment budget: decoder-param ratio of the chosen point")
    p.add_argument("--overwrite", action="store_true", help="start the search again instead of resuming an existing run folder (the old one is moved aside, not deleted)")
    p.add_argument("--gguf-type", default="q4_k_m", choices=("f32", "f16", "q8_0", "q4_k_m"),
                   help="the demo ends by running the subnet as a GGUF of this type in llama.cpp (default: %(default)s)")
    p.add_argument("--no-gguf", action="store_true", help="skip the GGUF export and the llama.cpp run")
    p.epilog = EPILOG
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def main(args: argparse.Namespace) -> int:
    from nas_llm import export, load_model, load_subnet, masked, slice_model
    from nas_llm.model.data import calibration_batch, eval_windows
    from nas_llm.model.importance import importance_ranking
    from nas_llm.model.metrics import perplexity
    from search_spaces import SubnetSpace

    t0 = time.time()
    out = Path(args.out)
    print(f"[demo] loading {args.model}")
    model, tok = load_model(args.model)
    space = SubnetSpace.from_model(model)
    test = eval_windows(tok, "wikitext2-test", seq_len=512, max_windows=args.test_windows)
    baseline = None
    if not args.no_search:
        subnet, reformed, baseline = _search_and_reform(args, model, tok, out)
    else:
        ranking = importance_ranking(model, calibration_batch(tok, "wikitext2-valid", 8, 256, seed=0), cache_dir=out)
        subnet = space.uniform_at_ratio(0.8, "mlp")
        reformed = slice_model(model, ranking.resolve(subnet), subnet=subnet)
    dense_ppl = perplexity(model, test, batch_size=2)
    exp = export(reformed, out / "export", tokenizer=tok, overwrite=True)
    reloaded = load_subnet(exp)
    ppl = perplexity(reloaded, test, batch_size=2)
    n_dense = sum(p.numel() for p in model.parameters())
    n_sub = sum(p.numel() for p in reloaded.parameters())
    summary = {
        "subnet": subnet.summary(), "decoder_params_ratio": round(space.ratio(subnet), 4),
        "params_dense": n_dense, "params_subnet": n_sub,
        "wikitext2_test_ppl_dense": round(dense_ppl, 3), "wikitext2_test_ppl_subnet": round(ppl, 3),
        "test_tokens": int(test.numel()), "export": str(exp),
    }
    if baseline is not None:  # the same test windows, the same ADMM calibration
        b_ppl = perplexity(baseline["model"], test, batch_size=2)
        summary["uniform_wanda_sp_admm"] = {"decoder_params_ratio": round(baseline["ratio"], 4), "wikitext2_test_ppl": round(b_ppl, 3)}
        verdict = "beats" if ppl < b_ppl else "does not beat"
        print(f"[demo] the pick ({space.ratio(subnet):.3f} params, test ppl {ppl:.2f}) {verdict} uniform Wanda-sp + ADMM "
              f"({baseline['ratio']:.3f} params, test ppl {b_ppl:.2f})")
        del baseline["model"]
    if not args.no_gguf:
        summary["llamacpp"] = run_in_llamacpp(model, reformed, tok, out, args.gguf_type)
    summary["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(summary, indent=1))
    return 0


def demo_config(args, out: Path, resume: bool = False):
    """The demo's search: ``perplexity_reformed`` vs size inside ``[budget - 0.03, budget]``, on 2 cores in minutes.

    Wanda-sp ranking, so the uniform seeds are uniform Wanda-sp (the baseline a pick must beat); allocation
    seeds from a short sensitivity pass (4 x 256 tokens, one width per layer); 4 x 256 scored tokens, one
    window screened in bfloat16, the best quarter promoted (successive halving).
    """
    from nas_llm.search import SearchConfig

    hi = args.max_params_ratio
    return SearchConfig(out=str(out), model=args.model, objectives=["perplexity_reformed", "params_ratio"],
                        constraints=[f"params_ratio in [{max(0.05, hi - 0.03):.4g},{hi:.4g}]"], allow_layer_drop=False,
                        importance="wanda", evaluations=args.evaluations, pop_size=8, calib_samples=8, ppl_samples=4,
                        ppl_seq_len=256, screen=0.25, halving=4, sens_samples=4, sens_seq_len=256, sens_points=1,
                        resume=resume)


def run_in_llamacpp(dense, subnet_model, tok, out: Path, outtype: str, prompt: str = "The capital of France is",
                    n_tokens: int = 32) -> dict:
    """Export subnet and dense model to GGUF, generate greedily in llama.cpp, compare decode speed (one run each)."""
    from nas_llm.model import llamacpp
    from nas_llm.model.gguf import export_gguf

    res: dict = {"type": outtype, "threads": llamacpp.default_threads(), "prompt": prompt}
    for name, m in (("subnet", subnet_model), ("dense", dense)):
        path = export_gguf(m, out / f"{name}.{outtype}.gguf", tok, outtype=outtype, overwrite=True)
        llm = llamacpp.open_model(path, n_ctx=256, threads=res["threads"])
        text, tps = llamacpp.generate(llm, prompt, n_tokens)
        llm.close()
        res[name] = {"gguf": str(path), "mib": round(path.stat().st_size / 2**20, 1), "text": text, "tokens_per_s": round(tps, 1)}
        print(f"[demo] llama.cpp {name} ({outtype}, {res[name]['mib']} MiB): {prompt}{text!r} ... {tps:.1f} tokens/s")
    res["decode_speedup"] = round(res["subnet"]["tokens_per_s"] / res["dense"]["tokens_per_s"], 3)
    print(f"[demo] run it yourself: llama-cli -m {res['subnet']['gguf']} -p {prompt!r}  (or Ollama / LM Studio); "
          "a careful speed comparison: nas-llm latency measure --runtime llamacpp")
    return res


def _search_and_reform(args, model, tok, out: Path):
    """Search (or resume), choose the best-perplexity point within the budget, reform it with ADMM."""
    from nas_llm.cli.search import one_line_warnings, print_result
    from nas_llm.model.data import calibration_batch
    from nas_llm.model.reform import reform
    from nas_llm.run import Run
    from nas_llm.search import run_search
    from nas_llm.select import select

    run = Run(out)
    if run.exists() and args.overwrite:  # never delete: the previous run moves aside
        aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        out.rename(aside)
        print(f"[demo] moved the previous run to {aside}")
    config = demo_config(args, out, resume=Run(out).exists())
    print(f"[demo] {config.command()}{' --resume' if config.resume else ''}")
    t0 = time.perf_counter()
    with one_line_warnings():
        print_result(config, run_search(config, model=model, tokenizer=tok), time.perf_counter() - t0)
    choice = select(out, "budget", max_params_ratio=args.max_params_ratio, optimize="perplexity_reformed")
    print("[demo] " + choice.describe(out).replace("\n", "\n[demo] "))
    subnet = Run(out).subnet(choice.id)
    plan = Run(out).ranking().resolve(subnet)
    # the windows the search's refit used, so the reformed model is the one the search ranked
    calib = calibration_batch(tok, config.calibration, config.calib_samples, config.calib_seq_len, seed=config.calib_seed)
    print(f"[demo] ADMM reformation of the chosen subnet on {config.calib_samples} x {config.calib_seq_len} calibration "
          f"tokens ({config.calibration})")
    baseline = None
    uni = _uniform_row(out, args.max_params_ratio)
    if uni is not None:  # what the pick must beat: uniform Wanda-sp at the largest size within the budget, + ADMM
        u = Run(out).subnet(int(uni["id"]))
        baseline = {"subnet": u, "ratio": float(uni["params_ratio"]),
                    "model": reform(model, Run(out).ranking().resolve(u), calib, "admm", subnet=u)}
    return subnet, reform(model, plan, calib, "admm", subnet=subnet), baseline


def _uniform_row(out: Path, budget: float):
    """The run's uniform (Wanda-sp) row with the most params within ``budget``, or None."""
    from nas_llm.run import Run

    df = Run(out).table()
    if "source" not in df.columns:
        return None
    u = df[(df["source"].astype(str) == "uniform") & (df["params_ratio"] <= budget + 1e-9)]
    return None if u.empty else u.sort_values("params_ratio").iloc[-1]

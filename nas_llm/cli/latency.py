"""``nas-llm latency measure|validate``: time a subnet, or check latency predictors against measurement.

    nas-llm latency measure --model smollm2-135m --ratio 0.7 --mode both --seq-len 128
    nas-llm latency measure --subnet subnet.json --device cuda --dtype bfloat16 --compiled
    nas-llm latency validate --n 20 --predictors lut,roofline,my_pkg.lat:MyPredictor --json val.json
    nas-llm latency validate --runtime llamacpp --type q4_k_m --threads 2 --mode both --n 20
    nas-llm latency measure --runtime llamacpp --ratio 0.8 --type f16 --mode both --seq-len 512
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from nas_llm.errors import ConfigError
from nas_llm.model.llamacpp import OUTTYPES


EPILOG = """examples:
  nas-llm latency measure --ratio 0.7 --mode both                       # PyTorch, this machine
  nas-llm latency measure --runtime llamacpp --type q4_k_m --threads 2 --ratio 0.8
  nas-llm latency validate --n 20 --predictors lut,roofline             # predictors vs measurement
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog, parser.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, help_text in (("measure", "time one subnet (the dense model by default)"),
                            ("validate", "Spearman and MAPE of latency predictors on N random subnets")):
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--model", default="smollm2-135m", help="built-in name, HF folder or .gguf (default: %(default)s)")
        p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
        p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: the model's)")
        p.add_argument("--mode", default="prefill", choices=["prefill", "decode", "both"])
        p.add_argument("--batch", type=int, default=1, help="prefill batch (decode is always batch 1)")
        p.add_argument("--seq-len", type=int, default=128, help="prefill length / decode prompt length")
        p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions; the median is reported")
        p.add_argument("--min-run-time", type=float, default=0.2, help="seconds per blocked_autorange")
        p.add_argument("--stat", default="median", choices=["median", "min"],
                       help="each round's value: its median block (typical), or its fastest block (ignores slow outlier blocks; made lookup tables more accurate on our noisy 2-core VM, benchmarks/RESULTS.md)")
        p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU), or llama.cpp's threads")
        p.add_argument("--runtime", default="torch", choices=["torch", "llamacpp"],
                       help="torch: the sliced model in PyTorch; llamacpp: its GGUF in llama.cpp (decode after --seq-len "
                            "tokens, or a prefill of --seq-len tokens), interleaved with the dense GGUF")
        p.add_argument("--type", default="q4_k_m", dest="outtype", choices=OUTTYPES, help="llama.cpp: GGUF type (default: %(default)s)")
        p.add_argument("--ranking", default=None, help="ranking.json that resolves subnets (default: identity order)")
        p.add_argument("--granularity", type=int, default=64)
        p.add_argument("--json", default=None, help="write the results here")
        if name == "measure":
            p.add_argument("--subnet", default=None, help="subnet JSON text or a file holding it")
            p.add_argument("--ratio", type=float, default=None, help="uniform subnet at this decoder-param ratio")
            p.add_argument("--ratio-mode", default="both", choices=["mlp", "both", "layers"])
            p.add_argument("--compiled", action="store_true", help="static cache + torch.compile (decode)")
        else:
            p.add_argument("--n", type=int, default=20, help="random subnets (default: %(default)s)")
            p.add_argument("--predictors", default="lut,roofline",
                           help="comma list of registered names or import paths pkg.mod:Name")
            p.add_argument("--seed", type=int, default=0)
            p.add_argument("--sampler", default="spread", choices=["spread", "uniform"],
                           help="spread: sizes spread over the space; uniform: space.sample per layer")


def _setup(args):
    import torch

    from nas_llm import load_model
    from search_spaces import Ranking, SubnetSpace

    from objectives.latency import resolve_device, resolve_dtype

    dev = resolve_device(args.device)  # fails before loading anything when CUDA is missing
    dt = resolve_dtype(args.dtype)
    if args.threads and args.runtime == "torch":
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, dtype=dt or torch.float32, device=dev)
    space = SubnetSpace.from_model(model, args.granularity)
    d = space.dims
    rank = Ranking.load(args.ranking) if args.ranking else Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate)
    args._tokenizer = tok  # the llama.cpp runtime writes GGUFs, which carry the tokenizer
    return model, space, rank


def _subnet(args, space):
    from search_spaces import Subnet

    if args.subnet and args.ratio is not None:
        raise ConfigError("give --subnet or --ratio, not both")
    if args.subnet:
        text = Path(args.subnet).read_text() if Path(args.subnet).is_file() else args.subnet
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"--subnet is neither a file nor JSON: {args.subnet[:80]!r}") from None
        return space.validate(Subnet.from_dict(data.get("subnet", data)))
    if args.ratio is not None:
        return space.uniform_at_ratio(args.ratio, args.ratio_mode)
    return space.dense()


def _modes(args) -> list[str]:
    return ["prefill", "decode"] if args.mode == "both" else [args.mode]


def _write(path: str | None, data: dict) -> None:
    if path:
        from nas_llm.model.atomic import atomic_write_text

        atomic_write_text(Path(path), json.dumps(data, indent=1, default=str))
        print(f"wrote {path}")


def _llamacpp_kwargs(args, mode: str) -> dict:
    return dict(type=args.outtype, threads=args.threads, mode=mode, n_tokens=args.seq_len, n_context=args.seq_len,
                rounds=args.rounds)


def measure_llamacpp(args, model, space, rank, subnet) -> int:
    """The subnet's GGUF against the dense GGUF in llama.cpp, interleaved, per mode."""
    from objectives import Context
    from objectives.llamacpp import LatencyLlamaCpp

    ctx = Context(model, args._tokenizer, space, rank)
    out = {"subnet": subnet.to_dict(), "params_ratio": space.ratio(subnet), "results": {}}
    for mode in _modes(args):
        obj = LatencyLlamaCpp(**_llamacpp_kwargs(args, mode))
        res = obj.measure(subnet, ctx)
        out["results"][mode] = {"settings": obj.settings(), **{k: r.to_dict() for k, r in res.items()}}
        s, dn = res["subnet"], res["dense"]
        print(f"{mode:8s} subnet {s.median_ms:.3f} ms (spread {s.spread * 100:.1f} %), dense {dn.median_ms:.3f} ms: "
              f"x{dn.median_s / s.median_s:.2f} faster  [{s.device}]")
    _write(args.json, out)
    return 0


def measure(args) -> int:
    from nas_llm.model.slicing import slice_model

    from objectives.latency import measure_latency

    model, space, rank = _setup(args)
    subnet = _subnet(args, space)
    if args.runtime == "llamacpp":
        print(f"subnet: {subnet.summary()}, decoder params ratio {space.ratio(subnet):.3f}")
        return measure_llamacpp(args, model, space, rank, subnet)
    m = model if subnet == space.dense() else slice_model(model, rank.resolve(subnet), subnet=subnet)
    print(f"subnet: {subnet.summary()}, decoder params ratio {space.ratio(subnet):.3f}")
    out = {"subnet": subnet.to_dict(), "params_ratio": space.ratio(subnet), "results": {}}
    for mode in _modes(args):
        r = measure_latency(m, mode, args.batch if mode == "prefill" else 1, args.seq_len,
                            compiled=args.compiled, min_run_time=args.min_run_time, rounds=args.rounds,
                            stat=args.stat)
        out["results"][mode] = r.to_dict()
        print(f"{mode:8s} {r}  spread of {len(r.round_medians_s)} rounds {r.spread * 100:.1f} %")
    _write(args.json, out)
    return 0


def validate(args) -> int:
    from objectives import get_predictor, sample_spread, validate_predictors

    model, space, rank = _setup(args)
    rng = np.random.default_rng(args.seed)
    subs = [sample_spread(space, rng) if args.sampler == "spread" else space.sample(rng, 0.1) for _ in range(args.n)]
    if args.runtime == "llamacpp":
        return validate_llamacpp(args, model, space, rank, subs)
    out = {"n": args.n, "sampler": args.sampler, "stat": args.stat, "ratios": [space.ratio(s) for s in subs], "modes": {}}
    for mode in _modes(args):
        batch = args.batch if mode == "prefill" else 1
        preds = {}
        for spec in [s for s in args.predictors.split(",") if s]:
            kw = {}
            from objectives import PREDICTORS, LookupTablePredictor, RooflinePredictor

            obj = PREDICTORS.resolve(spec)
            if obj in (LookupTablePredictor, RooflinePredictor):
                kw = dict(mode=mode, batch=batch, seq_len=args.seq_len, device=args.device, dtype=args.dtype)
                if obj is LookupTablePredictor:
                    kw.update(granularity=args.granularity, stat=args.stat)
            p = get_predictor(spec, **kw)
            p.setup(model)
            preds[spec] = p
        r = validate_predictors(model, preds, subs, rank, mode, batch, args.seq_len, rounds=args.rounds,
                                min_run_time=args.min_run_time, stat=args.stat)
        out["modes"][mode] = r
        print(f"\n{mode}: {args.n} subnets, measured {min(r['measured_s']) * 1e3:.2f}-{max(r['measured_s']) * 1e3:.2f} ms")
        print(f"{'predictor':30s} {'Spearman':>9s} {'MAPE %':>8s}")
        for name, v in r["predictors"].items():
            print(f"{name:30s} {v['spearman']:9.3f} {v['mape']:8.1f}")
    _write(args.json, out)
    return 0


def validate_llamacpp(args, model, space, rank, subs) -> int:
    """The llama.cpp lookup table (built or read from its cache) against each subnet's GGUF measured in llama.cpp."""
    from objectives.llamacpp_lut import LlamaCppLUT, validate_llamacpp as run_validation

    out = {"n": args.n, "sampler": args.sampler, "runtime": "llamacpp", "ratios": [space.ratio(s) for s in subs], "modes": {}}
    for mode in _modes(args):
        lut = LlamaCppLUT(**_llamacpp_kwargs(args, mode), granularity=args.granularity, tokenizer=args._tokenizer)
        lut.setup(model)
        r = run_validation(model, args._tokenizer, lut, subs, rank)
        out["modes"][mode] = {**r, "table": str(lut.path), "table_measured": lut.measured}
        print(f"\n{mode} in llama.cpp ({r['settings']['type']}, {r['settings']['threads']} threads): {args.n} subnets, "
              f"measured {min(r['measured_s']) * 1e3:.2f}-{max(r['measured_s']) * 1e3:.2f} ms, dense {r['dense_s'] * 1e3:.2f} ms")
        print(f"lookup table vs measured: Spearman {r['spearman']:.3f}, MAPE {r['mape']:.1f} %; machine {100 * (r['drift'] - 1):+.1f} % "
              f"vs when the table was built, MAPE {r['mape_anchored']:.1f} % anchored at the dense model  (table {lut.path})")
    _write(args.json, out)
    return 0


def check_args(args) -> None:
    """Every number before any model load or measurement."""
    for flag, v, lo in (("--batch", args.batch, 1), ("--seq-len", args.seq_len, 1), ("--rounds", args.rounds, 1),
                        ("--threads", args.threads, 1), ("--granularity", args.granularity, 1),
                        ("--n", getattr(args, "n", None), 2)):
        if v is not None and v < lo:
            raise ConfigError(f"{flag} must be >= {lo}, got {v}")
    if not args.min_run_time > 0:
        raise ConfigError(f"--min-run-time must be > 0 seconds, got {args.min_run_time}")
    ratio = getattr(args, "ratio", None)
    if ratio is not None and not 0 < ratio <= 1:
        raise ConfigError(f"--ratio must be in (0, 1] (kept fraction of decoder parameters), got {ratio}")


def main(args) -> int:
    check_args(args)
    return measure(args) if args.action == "measure" else validate(args)

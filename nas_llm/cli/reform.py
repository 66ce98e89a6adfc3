"""``nas-llm reform runs/NAME``: reform every Pareto member of a run (or the rows in ``--ids``)."""
from __future__ import annotations

import argparse
import sys

import torch

from nas_llm.errors import ConfigError
from nas_llm.reform import DEFAULT_DAMP, DEFAULT_ITERS, DEFAULT_RHO, METHODS, check_pareto_ids, reform_run, run_objectives
from nas_llm.run import Run


EPILOG = """examples:
  nas-llm reform runs/smollm2                       # ADMM-reform every Pareto member
  nas-llm reform runs/smollm2 --method exact --ids knee,12
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog, p.formatter_class = EPILOG, argparse.RawDescriptionHelpFormatter
    p.add_argument("run", help="run folder (runs/NAME) written by `nas-llm search`")
    p.add_argument("--method", choices=[m for m in METHODS if m != "none"], default="admm",
                   help="admm (the paper), exact (closed-form least squares) or bias (FLAP bias compensation); default admm")
    p.add_argument("--n-samples", type=int, default=None, help="calibration windows for reformation (default: 64 on CPU, 128 on GPU)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per window (default: 256 on CPU, 2048 on GPU)")
    p.add_argument("--source", default=None, help="calibration text (default: the run's calibration source; never the test split)")
    p.add_argument("--seed", type=int, default=None, help="calibration seed (default: the run's calibration seed + 1)")
    p.add_argument("--rho", type=float, default=DEFAULT_RHO, help=f"ADMM penalty on the scaled problem (default {DEFAULT_RHO})")
    p.add_argument("--iters", type=int, default=DEFAULT_ITERS, help=f"ADMM iterations (default {DEFAULT_ITERS})")
    p.add_argument("--damp", type=float, default=DEFAULT_DAMP, help=f"relative diagonal damping of X X^T (default {DEFAULT_DAMP})")
    p.add_argument("--batch-size", type=int, default=8, help="calibration windows per forward (default 8)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--ids", default=None, help="reform only these Pareto rows: comma-separated ids and/or 'knee' "
                   "(default: every Pareto member; ~2 min each on a 2-core CPU for SmolLM2). Export reforms any row it ships")


def check_args(args: argparse.Namespace) -> None:
    """Every number before the model load (minutes on a big model)."""
    for flag, v, lo in (("--n-samples", args.n_samples, 1), ("--seq-len", args.seq_len, 2), ("--iters", args.iters, 1),
                        ("--batch-size", args.batch_size, 1)):
        if v is not None and v < lo:
            raise ConfigError(f"{flag} must be >= {lo}, got {v}")
    if not args.rho > 0:
        raise ConfigError(f"--rho (ADMM penalty) must be > 0, got {args.rho}")
    if not args.damp >= 0:
        raise ConfigError(f"--damp (relative diagonal damping) must be >= 0, got {args.damp}")


def main(args: argparse.Namespace) -> int:
    from nas_llm.model.loading import load_model

    check_args(args)
    run = Run(args.run).require()
    settings = run.settings()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not settings.get("model"):
        raise ConfigError(f"{run.settings_file} does not name its model")
    ids = None  # parsed before the model load, so a bad --ids fails at once
    if args.ids:
        ids = []
        for part in (x.strip() for x in args.ids.split(",") if x.strip()):
            if part == "knee":
                from nas_llm.select import pick

                ids.append(pick(run.path, "knee").id)
            elif part.isdigit():
                ids.append(int(part))
            else:
                raise ConfigError(f"--ids: {part!r} is neither a row id nor 'knee'")
        check_pareto_ids(run, ids)
    model, tok = load_model(settings["model"], device=device)
    with run.lock():  # reform rewrites the table: one writer per run folder
        df = reform_run(run, model, tok, args.method, args.n_samples, args.seq_len, args.source, args.seed, args.rho, args.iters,
                        args.damp, args.batch_size, command="nas-llm reform " + " ".join(sys.argv[2:]), ids=ids)
    done = df[df["reformed"]]
    objs = run_objectives(run.settings())
    quality = [n for n in (objs.of_kind("quality") if objs else []) if f"{n}_reformed" in df.columns]
    print(f"reformed {len(done)} Pareto members of {run.path} with {args.method}")
    for _, r in done.iterrows():
        parts = [f"{n} {r[n]:.4g} -> {r[n + '_reformed']:.4g}" for n in quality]
        print(f"  id {r['id']}: " + ", ".join(parts) + f" ({r['reform_time_s']:.1f} s)")
    return 0

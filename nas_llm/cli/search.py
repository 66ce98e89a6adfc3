"""``nas-llm search``: build the context (model, calibration, ranking), declare the problem, run a driver.

Everything needed to rebuild the context later is written to ``run.json`` first; all checks on
the objectives and constraints run before the model is searched.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nas_llm.errors import ConfigError

DEFAULT_OBJECTIVES = "perplexity,latency_lut"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m", help="built-in name, HF folder or .gguf (default smollm2-135m)")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--driver", choices=("pymoo", "optuna", "random"), default="pymoo")
    p.add_argument("--algorithm", default="auto", choices=("auto", "nsga2", "nsga3"), help="pymoo algorithm (auto: NSGA-III for 3+ objectives)")
    p.add_argument("--sampler", default="nsga2", choices=("nsga2", "tpe", "gp", "random"), help="Optuna sampler")
    p.add_argument("--objectives", default=DEFAULT_OBJECTIVES, help=f"comma-separated names or pkg.mod:Name (default {DEFAULT_OBJECTIVES})")
    p.add_argument("--constraint", action="append", default=[], metavar="EXPR",
                   help="e.g. 'params_ratio in [0.5,0.9]' or 'latency_lut<=20' (repeatable)")
    p.add_argument("--evaluations", type=int, default=200, help="distinct subnets to score (Optuna: finished trials, all workers)")
    p.add_argument("--pop-size", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue a killed or finished run in --out")
    p.add_argument("--storage", default=None, help="Optuna storage: RDB URL (sqlite:///f.db, postgresql://...) or journal:PATH; default RUN/study.db")
    p.add_argument("--study-name", default="nas-llm")
    p.add_argument("--workers", type=int, default=1, help="Optuna: worker processes on this machine sharing the study")
    p.add_argument("--join", action="store_true", help="Optuna: add this process as a worker to an existing study")
    p.add_argument("--worker-id", default="0", help=argparse.SUPPRESS)
    p.add_argument("--granularity", type=int, default=64, help="MLP neurons in multiples of this")
    p.add_argument("--no-layer-drop", action="store_true", help="never drop whole layers")
    p.add_argument("--calibration", default="wikitext2-valid", help="calibration text (never a test split)")
    p.add_argument("--calib-samples", type=int, default=32)
    p.add_argument("--calib-seq-len", type=int, default=256)
    p.add_argument("--calib-seed", type=int, default=0)
    p.add_argument("--ppl-samples", type=int, default=8, help="perplexity objective: calibration windows (full fidelity)")
    p.add_argument("--ppl-seq-len", type=int, default=256, help="perplexity objective: tokens per window")
    p.add_argument("--importance", default="obs", choices=("obs", "magnitude", "wanda", "flap"))
    p.add_argument("--screen", type=float, default=0.25, help="screening fidelity (1 = off): score all at this fraction, re-score near the front")
    p.add_argument("--rescore-fronts", type=int, default=1, help="how many non-dominated fronts to re-score at full fidelity")
    p.add_argument("--no-rescore-baselines", action="store_true",
                   help="do not re-score the dense model and uniform baselines at full fidelity at the end")
    p.add_argument("--init", default="importance", choices=("importance", "random"), help="first generation")
    p.add_argument("--ref-point", default=None, help="hypervolume reference point, comma-separated (default: nadir of generation 0 + 10%%)")
    p.add_argument("--reform", default=None, choices=("admm", "exact", "bias"),
                   help="after the search, reform every Pareto member (as `nas-llm reform RUN --method M`; ~2 min each "
                   "for SmolLM2 on a 2-core CPU)")
    p.add_argument("--no-progress", action="store_true")


def _objectives(text: str) -> list[str]:
    names = [t.strip() for t in (text or "").split(",") if t.strip()]
    if not names:
        raise ConfigError("--objectives is empty; name at least one, e.g. --objectives perplexity,latency_lut")
    return names


def build(args: argparse.Namespace, run_dir: Path):
    """(SearchProblem, settings) for ``args``; validates objectives/constraints before loading anything heavy."""
    import objectives as objmod
    from objectives import OBJECTIVES, Constraint, Context, get_objective

    _ensure_registered()
    names = _objectives(args.objectives)
    for n in names:
        OBJECTIVES.resolve(n) if ":" not in n else None  # unknown name -> did-you-mean error now
    constraints = [Constraint.parse(c) for c in args.constraint]
    for c in constraints:
        if c.objective not in names:
            OBJECTIVES.resolve(c.objective)
        if c.objective == "params_ratio":
            for b in (c.lo, c.hi):
                if b is not None and not 0 < b <= 1:
                    raise ConfigError(f"constraint on params_ratio: bound {b} is outside (0, 1]")
    if not 0 < args.screen <= 1:
        raise ConfigError(f"--screen must be in (0, 1], got {args.screen}")
    ref = None
    if args.ref_point:
        ref = [float(v) for v in args.ref_point.split(",")]
        if len(ref) != len(names):
            raise ConfigError(f"--ref-point has {len(ref)} values for {len(names)} objectives")

    import torch

    from nas_llm import load_model
    from nas_llm.model.data import calibration_batch
    from nas_llm.model.importance import importance_ranking
    from search_spaces import SubnetSpace

    from nas_llm.search.problem import SearchProblem

    torch.manual_seed(args.seed)
    model, tok = load_model(args.model)
    calib = calibration_batch(tok, args.calibration, args.calib_samples, args.calib_seq_len, args.calib_seed)
    space = SubnetSpace.from_model(model, granularity=args.granularity, allow_layer_drop=not args.no_layer_drop)
    run_dir.mkdir(parents=True, exist_ok=True)
    ranking = importance_ranking(model, calib, method=args.importance, cache_dir=run_dir / "cache", progress=not args.no_progress)
    if not args.join:
        ranking.save(run_dir / "ranking.json")
    ctx = Context(model, tok, space, ranking, progress=not args.no_progress)
    ctx.cache.update(calibration=calib, calibration_source=args.calibration)
    obj_args = objective_args(args)
    objs = []
    for n in names:
        try:
            objs.append(get_objective(n, **obj_args.get(n, {})))
        except TypeError as e:
            raise ConfigError(f"objective {n!r} does not take the arguments {obj_args.get(n)}: {e}") from None
    sp = SearchProblem(ctx, objs, constraints, screen_fidelity=None if args.screen >= 1 else args.screen, worker=args.worker_id)
    settings: dict[str, Any] = {
        "model": args.model, "granularity": args.granularity, "allow_layer_drop": not args.no_layer_drop,
        "calibration": {"source": args.calibration, "n_samples": args.calib_samples, "seq_len": args.calib_seq_len, "seed": args.calib_seed},
        "importance": args.importance, **sp.describe(), "objective_args": obj_args, "seed": args.seed, "driver": args.driver,
        "algorithm": args.algorithm if args.driver == "pymoo" else args.sampler if args.driver == "optuna" else "random",
        "evaluations": args.evaluations, "pop_size": args.pop_size, "init": args.init,
        "storage": args.storage, "study_name": args.study_name, "reference_point": ref,
        "command": command_of(args),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _ = objmod
    return sp, settings, ref


def seed_ratios(constraints) -> tuple[float, ...] | None:
    """Seed sizes from the params_ratio constraints (None when there are none): a search asked for
    80% models should start from importance-ranked 80% models."""
    from nas_llm.search.population import ratios_within

    bands = [c for c in constraints if c.objective == "params_ratio"]
    if not bands:
        return None
    lo = max((c.lo for c in bands if c.lo is not None), default=None)
    hi = min((c.hi for c in bands if c.hi is not None), default=None)
    return ratios_within(lo, hi)


def command_of(args: argparse.Namespace) -> str:
    """The equivalent ``nas-llm search`` command line (also when called from Python, not the shell)."""
    import shlex

    parts = ["nas-llm", "search"]
    for k, v in vars(args).items():
        if k.startswith("_") or k in ("command", "worker_id") or v is None or v is False:
            continue
        flag = "--" + k.replace("_", "-")
        if v is True:
            parts.append(flag)
        elif isinstance(v, list):
            for item in v:
                parts += [flag, shlex.quote(str(item))]
        else:
            parts += [flag, shlex.quote(str(v))]
    return " ".join(parts)


def objective_args(args: argparse.Namespace) -> dict[str, dict]:
    """Constructor arguments per objective name: perplexity uses the run's calibration text and seed."""
    # batches of the screening size: a full-fidelity re-score then reuses the screened windows' NLL
    screen_rows = max(1, round(args.ppl_samples * args.screen)) if 0 < getattr(args, "screen", 1.0) < 1 else 8
    ppl = {"source": args.calibration, "n_samples": args.ppl_samples, "seq_len": args.ppl_seq_len,
           "seed": args.calib_seed, "batch_size": min(screen_rows, args.ppl_samples)}
    # reformed perplexity: reform on the run's calibration windows (what `reform` and the benchmarks refit on),
    # score on other windows (seed + 1), or the score would reward cutting more
    reformed = {**ppl, "seed": args.calib_seed + 1, "reform_samples": args.calib_samples,
                "reform_seq_len": args.calib_seq_len, "reform_seed": args.calib_seed}
    return {"perplexity": ppl, "perplexity_reformed": reformed}


def _ensure_registered() -> None:
    """Import objective modules that register themselves (perplexity, latency...) if present."""
    import importlib

    for mod in ("objectives.perplexity", "objectives.latency", "objectives.predictors"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise


def main(args: argparse.Namespace) -> int:
    from nas_llm.run import Run

    run = Run(args.out)
    if args.evaluations < 1:
        raise ConfigError(f"--evaluations must be >= 1, got {args.evaluations}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    if args.workers > 1 and args.driver != "optuna":
        raise ConfigError("--workers needs --driver optuna (workers share an Optuna storage)")
    if run.exists() and not (args.resume or args.join):
        raise FileExistsError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")
    if (args.resume or args.join) and run.exists():
        old = run.settings()
        was = ",".join(o["name"] for o in old.get("objectives", []))
        if was and was != ",".join(_objectives(args.objectives)):
            raise ConfigError(f"{run.path} was searched with --objectives {was}; resume it with the same objectives")
        if old.get("driver") not in (None, args.driver):
            raise ConfigError(f"{run.path} was searched with --driver {old['driver']}; resume it with the same driver")
    sp, settings, ref = build(args, run.path)
    ratios = seed_ratios(sp.constraints)
    if ratios is not None:
        settings["seed_ratios"] = [round(r, 4) for r in ratios]
    if not args.join:
        run.write_settings(settings)
    progress = not args.no_progress
    common = dict(seed=args.seed, run_dir=run.path, resume=args.resume, rescore_fronts=args.rescore_fronts,
                  ref_point=ref, progress=progress)
    t0 = time.perf_counter()
    if args.driver == "pymoo":
        from nas_llm.search.pymoo_driver import run_pymoo

        res = run_pymoo(sp, args.evaluations, args.pop_size, algorithm=args.algorithm, init=args.init, ratios=ratios,
                        rescore_baselines=not args.no_rescore_baselines, **common)
    elif args.driver == "random":
        from nas_llm.search.random_driver import run_random

        res = run_random(sp, args.evaluations, batch=args.pop_size, **common)
    else:
        from nas_llm.search.optuna_driver import run_optuna

        children, is_child = [], args.join
        if args.workers > 1:
            # this process creates the study (and enqueues the first generation) before the others join
            from nas_llm.search.optuna_driver import prepare_study

            prepare_study(sp, args.storage, run.path, args.study_name, args.sampler, args.seed, args.pop_size,
                          resume=args.resume, init=args.init, ratios=ratios)
            args.resume, args.join = False, True
            storage = args.storage or f"sqlite:///{run.path.resolve() / 'study.db'}"
            for k in range(1, args.workers):
                cmd = [sys.executable, "-m", "nas_llm.cli", "search", *_child_args(args, storage, k)]
                children.append(subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
        res = run_optuna(sp, args.evaluations, args.sampler, args.pop_size, storage=args.storage, study_name=args.study_name,
                         join=args.join, init=args.init, ratios=ratios, shared=args.workers > 1 or args.join or args.storage is not None,
                         write=False, **{**common, "resume": args.resume})
        bad = [c.wait() for c in children]
        if any(bad):
            print(f"warning: {sum(1 for b in bad if b)} worker(s) exited with an error", file=sys.stderr)
        if is_child:
            print(f"worker {args.worker_id} done; run `nas-llm search --resume` with the same arguments after all "
                  f"workers finish to rewrite the table", file=sys.stderr)
            return 0
        from nas_llm.search.optuna_driver import finish

        res = finish(sp, args.storage, run.path, args.study_name, args.rescore_fronts, args.pop_size, ref,
                     rescore_baselines=not args.no_rescore_baselines)
    wall = time.perf_counter() - t0
    settings["wall_s"] = round(wall, 2)
    settings["n_calls"] = sp.n_calls
    settings["cache_hits"] = sp.n_hits
    settings["objective_s"] = {k: round(v, 2) for k, v in sp.objective_s.items()}
    run.write_settings(settings)
    front = res.front
    print(res)
    cols = list(dict.fromkeys(["id", *res.objectives, "params_ratio", "source"]))
    print(front[[c for c in cols if c in front]].to_string(index=False))
    print(f"{len(res.table)} evaluations in {wall:.1f} s -> {run.path}")
    if args.reform:
        from nas_llm.reform import reform_run

        df = reform_run(run, sp.ctx.model, sp.ctx.tokenizer, args.reform, progress=progress,
                        command=f"nas-llm search ... --reform {args.reform}")
        print(f"reformed {int(df['reformed'].sum())} Pareto members with {args.reform} (columns *_reformed)")
    return 0


def _child_args(args: argparse.Namespace, storage: str, k: int) -> list[str]:
    """The command line of worker ``k``: the same search, joining the parent's study."""
    out = ["--model", args.model, "--out", str(args.out), "--driver", "optuna", "--sampler", args.sampler,
           "--objectives", args.objectives, "--evaluations", str(args.evaluations), "--pop-size", str(args.pop_size),
           "--seed", str(args.seed), "--storage", storage, "--study-name", args.study_name, "--join",
           "--worker-id", str(k), "--granularity", str(args.granularity), "--calibration", args.calibration,
           "--calib-samples", str(args.calib_samples), "--calib-seq-len", str(args.calib_seq_len),
           "--calib-seed", str(args.calib_seed), "--ppl-samples", str(args.ppl_samples),
           "--ppl-seq-len", str(args.ppl_seq_len), "--importance", args.importance, "--screen", str(args.screen),
           "--init", args.init, "--no-progress"]
    for c in args.constraint:
        out += ["--constraint", c]
    if args.no_layer_drop:
        out.append("--no-layer-drop")
    return out

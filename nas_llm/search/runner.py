"""``run_search(config)``: one search from a :class:`~nas_llm.search.config.SearchConfig` to a run folder.

What the CLI, the demo and the benchmarks all call::

    validate the config -> lock the run folder -> refuse a run folder of another search
    -> objectives, model, calibration windows, space, importance ranking -> SearchProblem
    -> ranking.json + run.json -> driver (+ local Optuna workers) -> table, front, run.json stats

A ``--join`` worker takes no lock and writes neither run.json nor the table: it shares the
coordinator's study, and the coordinator (holding the folder's lock) writes the folder.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

from nas_llm.errors import ConfigError, NasLLMError, RunFolderError
from nas_llm.run import Run

from .config import SearchConfig
from .loop import DRIVERS, SearchLoop
from .population import seed_ratios
from .problem import SearchProblem
from .result import SearchResult


class WorkerFailedError(NasLLMError, RuntimeError):
    """A ``--workers`` child process exited with an error (its own message is above)."""


def search_lock(config: SearchConfig) -> AbstractContextManager:
    """The run folder's writer lock; a ``--join`` worker shares the coordinator's folder and takes none."""
    return nullcontext() if config.join else Run(config.out).lock()


def check_run_folder(config: SearchConfig, run: Run) -> None:
    """Refuse to overwrite a run, or to resume/join it with settings that change its numbers (reads only)."""
    if not run.exists():
        return
    if not (config.resume or config.join):
        raise RunFolderError(f"{run.path} already holds a run; pass --resume to continue it or choose another --out")
    diffs = SearchConfig.from_json(run.settings(), out=config.out).diff(config)
    if diffs:
        raise ConfigError(f"{run.path} was searched with other settings; {'resume' if config.resume else 'join'} it with "
                          f"the same ones or choose another --out. Differences: {'; '.join(diffs)}")


def run_search(config: SearchConfig, *, model: Any = None, tokenizer: Any = None) -> SearchResult:
    """Search as ``config`` says; ``model``/``tokenizer``: already loaded (else ``config.model`` is loaded).

    The result's ``context`` holds the model, tokenizer, space and ranking the search used.
    """
    config.validate()
    run = Run(config.out)
    with search_lock(config), torch_threads(config.threads) as threads:
        # --screen-dtype auto: an existing run's recorded dtype, else the faster one on this CPU (at these threads)
        dtype, probe = config.concrete_screen_dtype(run.settings() if run.exists() else None)
        config = replace(config, screen_dtype=dtype)
        check_run_folder(config, run)
        t_setup = time.perf_counter()
        sp = build_problem(config, run, model, tokenizer)
        alloc = allocation_seeds(config, sp, run)
        sp.setup()
        settings = {**_settings(config, sp, run), "threads": threads, "setup_s": round(time.perf_counter() - t_setup, 2),
                    **({"alloc": alloc} if alloc else {}), **({"screen_dtype_probe": probe} if probe else {})}
        if not config.join:
            sp.ctx.ranking.save(run.ranking_file)
            run.write_settings(settings)
        t0 = time.perf_counter()
        res, failed = _drive(config, sp, run)
        if not config.join:
            run.write_settings({**settings, **_stats(sp, time.perf_counter() - t0)})
    if failed:
        raise WorkerFailedError(f"{len(failed)} worker process(es) exited with an error ({', '.join(failed)}; see their "
                                f"messages above); the table holds every finished trial; run again with --resume to "
                                f"finish the budget")
    res.context = sp.ctx
    return res


def make_objectives(config: SearchConfig) -> list:
    """The objectives with the run's constructor arguments (perplexity: the run's calibration text)."""
    from objectives import get_objective

    args = config.objective_args()
    out = []
    for name in config.objectives:
        try:
            out.append(get_objective(name, **args.get(name, {})))
        except TypeError as e:
            raise ConfigError(f"objective {name!r} does not take the arguments {args.get(name)}: {e}") from None
    return out


def build_problem(config: SearchConfig, run: Run, model: Any = None, tokenizer: Any = None) -> SearchProblem:
    """Objectives first (their errors come before the model load), then model, calibration, space, ranking."""
    import torch

    from nas_llm.model.data import calibration_batch
    from nas_llm.model.importance import importance_ranking
    from nas_llm.model.loading import load_model
    from objectives import Context, ReformedPerplexity
    from objectives.reformed import gram_key
    from search_spaces import SubnetSpace

    objectives = make_objectives(config)
    torch.manual_seed(config.seed)
    if model is None:
        model, tokenizer = load_model(config.model)
    from nas_llm.model.family_check import check_family

    check_family(model)  # a family inferred from the modules: masked == sliced before anything is searched
    run.check_model(model)  # resume/join: the weights must be the ones searched, before anything is written
    calib = calibration_batch(tokenizer, config.calibration, config.calib_samples, config.calib_seq_len, config.calib_seed)
    space = SubnetSpace.from_model(model, granularity=config.granularity, allow_layer_drop=config.allow_layer_drop,
                                   query_heads=config.query_heads)
    run.path.mkdir(parents=True, exist_ok=True)
    grams: dict = {}
    ranking = importance_ranking(model, calib, method=config.importance, cache_dir=run.path / "cache", progress=config.progress,
                                 grams=grams)
    ctx = Context(model, tokenizer, space, ranking, progress=config.progress)
    ctx.cache.update(calibration=calib, calibration_source=config.calibration)
    if grams and any(isinstance(o, ReformedPerplexity) for o in objectives):
        # the ranking's dense pass ran on the reformation windows (objective_args): the refit needs no second one
        ctx.cache[gram_key(model, config.calibration, config.calib_samples, config.calib_seq_len, config.calib_seed)] = grams
    return SearchProblem(ctx, objectives, config.constraints, screen_fidelity=None if config.screen >= 1 else config.screen,
                         worker=config.worker_id, halving=config.halving,
                         rung_step=config.rung_step)


def free_cores() -> int:
    """The cores the 1-minute load average leaves free (at least 1): two OpenMP threads on cores another job
    keeps busy run slower than one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores, cores - busy))


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """``torch.set_num_threads(threads)`` (0: :func:`free_cores`) for the block; the previous count after it."""
    import torch

    before = torch.get_num_threads()
    n = int(threads) if threads > 0 else free_cores()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def text_digest(source: str) -> str:
    """A short hash of the text behind a source name or path (the name itself for ``hf:`` sources): a shared cache
    keyed by names alone would serve a stale table after the file at that name changed."""
    import hashlib

    from nas_llm.model.data import resolve_source

    src = resolve_source(source)
    return hashlib.sha256(src.read_bytes()).hexdigest()[:16] if isinstance(src, Path) else str(src)


def allocation_seeds(config: SearchConfig, sp: SearchProblem, run: Run) -> dict[str, Any] | None:
    """Sensitivity-based allocation seeds for the first generation (``sp.extra_seeds``, tag ``alloc``).

    The table is measured with the search's first perplexity objective on its own short windows and
    cached in ``RUN/sensitivity.json`` (reused on resume when the settings match) and, unless
    ``--no-sens-cache``, in ``$NAS_LLM_CACHE/sensitivity`` for the other seeds and runs of the same settings. Returns what
    run.json records, or None when there are no seeds (``--no-alloc``, random init, a joining worker,
    no perplexity objective).
    """
    from objectives import Perplexity

    from .allocation import alloc_seeds
    from .population import DEFAULT_RATIOS, seed_ratios
    from .sensitivity import SENSITIVITY_FILE, load_or_measure

    obj = next((o for o in sp.objectives if isinstance(o, Perplexity)), None)
    if not config.alloc or config.init != "importance" or config.join or obj is None:
        return None
    sp.setup()
    from nas_llm.model.metrics import chunkable

    if config.sens_metric == "kl" and not chunkable(sp.ctx.model):
        raise ConfigError(f"--sens-metric kl needs the LM head's input, and {type(sp.ctx.model).__name__} transforms its "
                          f"logits after the head (softcapping or scaling); pass --sens-metric nll, or --no-alloc")
    # fp32 always: the dense baseline comes from the fp32 prefix cache and layers before a cut reuse fp32
    # states, so a bf16 probe would add a layer-dependent offset as large as one layer's cost
    probe = obj.with_windows(config.sens_samples, config.sens_seq_len, dtype=None)
    from nas_llm.model.loading import cache_dir, model_fingerprint

    keyed = {"model_fingerprint": model_fingerprint(sp.ctx.model), "objective": obj.name,
             "objective_args": config.objective_args().get(obj.name), "importance": config.importance,
             "calibration": [config.calibration, config.calib_samples, config.calib_seq_len, config.calib_seed],
             "granularity": config.granularity, "windows": [config.sens_samples, config.sens_seq_len],
             "dtype": "float32", "points": config.sens_points}
    ratios = list(seed_ratios(sp.constraints) or DEFAULT_RATIOS)
    lo, hi = min(ratios), max(ratios)
    # measure down to twice the uniform cut at the smallest size asked for (at least half the MLP): deep
    # enough for what the allocations need, never priced by extrapolation
    n = sp.space.neuron_choices
    depth = min(max(0.5, 2 * (1 - sp.space.uniform_at_ratio(lo, "mlp").layers[0].neurons / n[-1])), 1 - n[0] / n[-1])
    keyed["max_cut"] = round(depth, 6)
    shared = cache_dir() / "sensitivity" if config.sens_cache else None
    texts = {config.calibration, (keyed["objective_args"] or {}).get("source")} - {None} if shared else set()
    sens = load_or_measure(run.path, probe, sp.ctx, config.sens_points, keyed, depth, cache=shared,
                           cache_extra={str(t): text_digest(t) for t in texts}, metric=config.sens_metric)
    # also the uniform MLP subnets' own sizes inside the band: allocations at exactly the baseline's params
    ratios += [sp.space.ratio(u) for u in {sp.space.uniform_at_ratio(r, "mlp") for r in ratios} if lo <= sp.space.ratio(u) <= hi]
    made = alloc_seeds(sp.space, sens.table(sp.space), sorted(set(ratios)), floor=lo if seed_ratios(sp.constraints) else None)
    sp.extra_seeds = [(s, "alloc") for s, _ in made]
    # measuring time of *this* run: 0 when the table came from the run folder (resume) or the shared cache
    return {"seeds": len(made), "sensitivity_s": sens.seconds if sens.source == "measured" else 0.0,
            "sensitivity_from": sens.source, "file": SENSITIVITY_FILE,
            "made": [{"key": s.key(), **info} for s, info in made]}


def _settings(config: SearchConfig, sp: SearchProblem, run: Run) -> dict[str, Any]:
    """run.json: a resumed run keeps what other commands recorded (reform, created) and gets the config anew."""
    from nas_llm.model.loading import model_fingerprint

    old = run.settings() if run.exists() else {}
    settings = {**old, **config.to_json(), **sp.describe(), "model_fingerprint": model_fingerprint(sp.ctx.model),
                "created": old.get("created") or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "space": sp.space.size()}
    ratios = seed_ratios(sp.constraints)
    if ratios is not None:
        settings["seed_ratios"] = [round(r, 4) for r in ratios]
    return settings


def _stats(sp: SearchProblem, wall: float) -> dict[str, Any]:
    return {"wall_s": round(wall, 2), "n_calls": sp.n_calls, "cache_hits": sp.n_hits,
            "objective_s": {k: round(v, 2) for k, v in sp.objective_s.items()}}


def _drive(config: SearchConfig, sp: SearchProblem, run: Run) -> tuple[SearchResult, list[str]]:
    """Run the driver; with ``--workers N`` start N-1 local workers once the study exists, and
    finish (re-score, write the table) only when all of them are done."""
    driver = DRIVERS.resolve(config.driver).from_config(config, sp)
    loop = SearchLoop(sp, config.evaluations, run_dir=run.path, resume=config.resume, rescore_fronts=config.rescore_fronts,
                      ref_point=config.ref_point, progress=config.progress, rescore_baselines=config.rescore_baselines,
                      baseline_margin=config.baseline_margin, seed_margin=config.seed_margin, write=not config.join)
    loop.start(driver)
    children = spawn_workers(config)
    try:
        loop.search()
    except BaseException:
        for c in children:
            c.terminate()
        raise
    failed = [f"worker {k} exit {rc}" for k, c in enumerate(children, 1) if (rc := c.wait())]
    return loop.finish(), failed


def spawn_workers(config: SearchConfig) -> list[subprocess.Popen]:
    """``config.workers - 1`` processes running :meth:`SearchConfig.worker` (same settings, ``--join``).

    They see the parent's import path, so an objective given as ``pkg.mod:Name`` resolves there too.
    """
    if config.workers <= 1:
        return []
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
    return [subprocess.Popen([sys.executable, "-m", "nas_llm.cli", "search", *config.worker(k).to_argv()], env=env)
            for k in range(1, config.workers)]


__all__ = ["run_search", "build_problem", "make_objectives", "check_run_folder", "search_lock", "spawn_workers",
           "free_cores", "torch_threads", "allocation_seeds", "WorkerFailedError"]

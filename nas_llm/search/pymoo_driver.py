"""pymoo driver: NSGA-II (NSGA-III for 3+ objectives) on the integer encoding, checkpointed every generation.

Runs pymoo's ask/tell loop so that after every generation we can (1) re-score points near the
front at full fidelity, (2) write the run table, hypervolume history and front, and (3) write
``checkpoint.json`` -- the surviving population's encodings and the algorithm's RNG state, no
pickle. Every finished evaluation is also appended to ``evaluations.jsonl`` at once, so
``resume=True`` after a SIGKILL re-asks the interrupted generation from the same RNG state and
finds its finished members in the cache: nothing lost, nothing evaluated twice.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from nas_llm.errors import ConfigError
from nas_llm.model.atomic import atomic_write_text
from nas_llm.run import Run

from .population import initial_population
from .problem import SearchProblem, check_objective_matrix
from .result import SearchResult, default_reference

CHECKPOINT = "checkpoint.json"
JOURNAL = "evaluations.jsonl"


def pymoo_problem(sp: SearchProblem):
    """``sp`` as a pymoo ``Problem``: integer variables, ``out["F"]`` (minimised), ``out["G"]`` (<= 0 feasible).

    Usable on its own: ``pymoo.optimize.minimize(pymoo_problem(sp), NSGA2(...))``.
    """
    from pymoo.core.problem import Problem

    class SubnetProblem(Problem):
        def __init__(self) -> None:
            xl, xu = sp.space.bounds()
            super().__init__(n_var=sp.space.n_var, n_obj=len(sp.names), n_ieq_constr=len(sp.constraints), xl=xl, xu=xu, vtype=int)
            self.sp, self.source, self.generation, self.sources = sp, "nsga2", 0, {}

        def _evaluate(self, X, out, *args, **kwargs):
            rows = []
            for x in np.atleast_2d(X):
                s = sp.space.decode(sp.repair(x))
                rows.append(sp.evaluate(s, self.sources.get(s.key(), self.source), self.generation))
            out["F"] = check_objective_matrix(np.stack([sp.search_values(r) for r in rows]), len(rows), self.n_obj)
            if self.n_ieq_constr:
                out["G"] = np.array([sp.violations(r) for r in rows], dtype=float).reshape(len(rows), self.n_ieq_constr)

    return SubnetProblem()


def _repair(sp: SearchProblem):
    from pymoo.core.repair import Repair

    class SubnetRepair(Repair):
        def _do(self, problem, X, **kwargs):
            return np.stack([sp.repair(x) for x in np.atleast_2d(X)]) if len(X) else X

    return SubnetRepair()


def make_algorithm(sp: SearchProblem, sampling, pop_size: int, name: str = "auto"):
    """NSGA-II for 1-2 objectives, NSGA-III (Das-Dennis directions) for 3+, with integer operators."""
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair

    n_obj = len(sp.names)
    name = ("nsga3" if n_obj >= 3 else "nsga2") if name == "auto" else name
    ops = dict(
        sampling=sampling,
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(prob=1.0, eta=20, vtype=float, repair=RoundingRepair()),
        repair=_repair(sp),
        eliminate_duplicates=True,
    )
    if name == "nsga2":
        from pymoo.algorithms.moo.nsga2 import NSGA2

        return NSGA2(pop_size=pop_size, **ops), name
    if name == "nsga3":
        from pymoo.algorithms.moo.nsga3 import NSGA3
        from pymoo.util.ref_dirs import get_reference_directions

        parts = 1
        while len(get_reference_directions("das-dennis", n_obj, n_partitions=parts + 1)) <= pop_size:
            parts += 1
        ref_dirs = get_reference_directions("das-dennis", n_obj, n_partitions=parts)
        return NSGA3(ref_dirs=ref_dirs, pop_size=max(pop_size, len(ref_dirs)), **ops), name
    raise ConfigError(f"unknown pymoo algorithm {name!r}; choose nsga2, nsga3 or auto")


class Progress:
    """A tqdm bar over unique evaluations with front size and hypervolume in the postfix."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=min(initial, total), desc=desc, unit="eval")
        self.n = initial

    def update(self, n_now: int, front: int, hv: float) -> None:
        if self.bar is not None:
            self.bar.update(max(0, min(n_now, self.bar.total) - self.n))
            self.bar.set_postfix(front=front, hv=f"{hv:.4g}")
        self.n = n_now

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def finish_generation(sp: SearchProblem, run: Run | None, ref: list[float] | None, rescore_fronts: int) -> tuple[SearchResult, list[float]]:
    """Re-score near the front, fix the reference point (first time), write the table/front/history."""
    if rescore_fronts > 0:
        sp.rescore(sp.near_front(sp.rows(), rescore_fronts))
    rows = sp.rows()
    if ref is None:
        import pandas as pd

        ref = default_reference(pd.DataFrame(rows), sp.names, sp.directions)
    res = SearchResult.from_rows(rows, sp.names, sp.directions, ref)
    if run is not None:
        res.save(run)
    return res, ref


def run_pymoo(sp: SearchProblem, evaluations: int, pop_size: int = 24, seed: int = 0, algorithm: str = "auto",
              run_dir: str | Path | None = None, resume: bool = False, init: str = "importance",
              ratios: Sequence[float] | None = None, rescore_fronts: int = 1,
              ref_point: Sequence[float] | None = None, progress: bool = True,
               rescore_baselines: bool = False) -> SearchResult:
    """Search until ``evaluations`` distinct subnets are scored (the last generation is trimmed to fit)."""
    if evaluations < 1:
        raise ConfigError(f"evaluations must be >= 1, got {evaluations}")
    if pop_size < 2:
        raise ConfigError(f"population size must be >= 2, got {pop_size}")
    from pymoo.core.evaluator import Evaluator
    from pymoo.core.termination import NoTermination
    from pymoo.operators.sampling.rnd import IntegerRandomSampling

    run = Run(run_dir) if run_dir is not None else None
    ckpt = None
    if run is not None:
        sp.journal = run.path / JOURNAL
        ck_file = run.path / CHECKPOINT
        if resume:
            sp.load_journal()
            if ck_file.is_file():
                ckpt = json.loads(ck_file.read_text())
        elif sp.journal.is_file() and sp.journal.stat().st_size:
            raise FileExistsError(f"{run.path} already holds evaluations; pass resume=True (--resume) to continue it")
    sp.setup()
    problem = pymoo_problem(sp)
    ref = None if ref_point is None else [float(v) for v in ref_point]
    generation = 0
    if ckpt is not None:
        sampling = np.asarray(ckpt["population"], dtype=int)
        generation = int(ckpt["generation"]) + 1
        ref = ckpt.get("reference_point", ref)
    elif init == "importance":
        members = initial_population(sp.space, sp.ctx.ranking, pop_size, seed, **({"ratios": ratios} if ratios else {}))
        problem.sources = {s.key(): src for s, src in members}
        sampling = np.stack([sp.space.encode(s) for s, _ in members])
    elif init == "random":
        sampling = IntegerRandomSampling()
    else:
        raise ConfigError(f"unknown init {init!r}; choose importance or random")
    algo, name = make_algorithm(sp, sampling, pop_size, algorithm)
    problem.source = name
    algo.setup(problem, termination=NoTermination(), seed=seed, verbose=False)
    bar = Progress(evaluations, len(sp.cache), progress, f"search ({name})")
    evaluator = Evaluator()
    res: SearchResult | None = None
    try:
        if ckpt is not None:  # rebuild the survivors (all cached), then restore the RNG
            pop = algo.ask()
            problem.generation = int(ckpt["generation"])
            evaluator.eval(problem, pop)
            algo.tell(infills=pop)
            if ckpt.get("rng") and getattr(algo, "random_state", None) is not None:  # pymoo >= 0.6.2
                algo.random_state.bit_generator.state = ckpt["rng"]
        while len(sp.cache) < evaluations:
            pop = algo.ask()
            if pop is None or len(pop) == 0:
                break
            pop = _trim_to_budget(sp, pop, evaluations - len(sp.cache))
            problem.generation = generation
            if generation == 0 and not problem.sources:
                problem.source = "random"  # pymoo's own random first generation
            evaluator.eval(problem, pop)
            problem.source = name
            algo.tell(infills=pop)
            res, ref = finish_generation(sp, run, ref, rescore_fronts)
            if run is not None:
                atomic_write_text(run.path / CHECKPOINT, json.dumps({
                    "generation": generation, "evaluations": len(sp.cache),
                    "population": np.asarray(algo.pop.get("X"), dtype=int).tolist(),
                    "rng": _rng_state(algo), "reference_point": ref,
                }, default=int))
            bar.update(len(sp.cache), int(res.table["pareto"].sum()), res.hypervolume)
            generation += 1
    finally:
        bar.close()
    if rescore_baselines and sp.rescore(sp.baselines()):
        res = None
    if res is None or len(res.table) != len(sp.cache):
        res, ref = finish_generation(sp, run, ref, rescore_fronts)
    return res


def _rng_state(algo) -> dict | None:
    rs = getattr(algo, "random_state", None)
    return None if rs is None else rs.bit_generator.state


def _trim_to_budget(sp: SearchProblem, pop, remaining: int):
    """Keep individuals until ``remaining`` new (uncached) subnets are in; cached ones are free."""
    keep, new, seen = [], 0, set()
    for i, x in enumerate(pop.get("X")):
        k = sp.space.decode(sp.repair(x)).key()
        fresh = k not in sp.cache and k not in seen
        if fresh and new >= remaining:
            continue
        seen.add(k)
        new += fresh
        keep.append(i)
    return pop[keep] if len(keep) < len(pop) else pop

"""pymoo driver: NSGA-II (NSGA-III for 3+ objectives) on the integer encoding, checkpointed every generation.

An ask/tell adapter for :class:`~nas_llm.search.loop.SearchLoop`: after every generation the loop
re-scores points near the front, writes the run table and front, and ``checkpoint.json`` with this
driver's :meth:`PymooDriver.state` -- the surviving population's encodings and the algorithm's RNG
state, no pickle. ``resume=True`` after a SIGKILL re-asks the interrupted generation from the same
RNG state and finds its finished members in the journal: nothing lost, nothing evaluated twice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nas_llm.errors import ConfigError

from .config import ALGORITHMS, INITS
from .loop import Candidate, Driver, SearchLoop, run_driver, warn_seeds_over_budget
from .population import initial_population, seed_ratios
from .problem import SearchProblem, check_objective_matrix
from .result import SearchResult


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
            out.update(objective_arrays(sp, rows))

    return SubnetProblem()


def _shell(problem):
    """A bare pymoo ``Problem`` of ``problem``'s shape (variables, objectives, constraints, bounds): cheap to copy."""
    from pymoo.core.problem import Problem

    return Problem(n_var=problem.n_var, n_obj=problem.n_obj, n_ieq_constr=problem.n_ieq_constr, xl=problem.xl,
                   xu=problem.xu, vtype=problem.vtype)


def objective_arrays(sp: SearchProblem, rows: list[dict]) -> dict[str, np.ndarray]:
    """pymoo's ``F`` (minimised search values) and ``G`` (<= 0 feasible, when there are constraints) of ``rows``."""
    out = {"F": check_objective_matrix(np.stack([sp.search_values(r) for r in rows]), len(rows), len(sp.names))}
    if sp.constraints:
        out["G"] = np.array([sp.violations(r) for r in rows], dtype=float).reshape(len(rows), len(sp.constraints))
    return out


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
    raise ConfigError(f"unknown pymoo algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}")


class PymooDriver(Driver):
    """pymoo's ask/tell: ``ask`` returns the algorithm's infills (trimmed to the budget), ``tell``
    hands their F/G to pymoo through a ``StaticProblem``; the checkpoint holds the survivors and the RNG."""

    name = "pymoo"

    def __init__(self, pop_size: int = 24, seed: int = 0, algorithm: str = "auto", init: str = "importance",
                 ratios: Sequence[float] | None = None):
        if pop_size < 2:
            raise ConfigError(f"population size must be >= 2, got {pop_size}")
        if init not in INITS:
            raise ConfigError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
        self.pop_size, self.seed, self.algorithm, self.init, self.ratios = pop_size, seed, algorithm, init, ratios
        self.sources: dict[str, str] = {}
        self.algo_name = algorithm  # nsga2 / nsga3 once "auto" is decided in start()
        self._pop = None

    @classmethod
    def from_config(cls, config, sp: SearchProblem) -> "PymooDriver":
        return cls(config.pop_size, config.seed, config.algorithm, config.init, seed_ratios(sp.constraints))

    @property
    def label(self) -> str:
        return self.algo_name

    def start(self, loop: SearchLoop, checkpoint: dict | None) -> None:
        from pymoo.core.termination import NoTermination

        super().start(loop, checkpoint)
        sp = loop.sp
        self.problem = pymoo_problem(sp)
        self.algo, self.algo_name = make_algorithm(sp, self._sampling(checkpoint, loop), self.pop_size, self.algorithm)
        self.algo.setup(self.problem, termination=NoTermination(), seed=self.seed, verbose=False)
        if checkpoint is not None:  # rebuild the survivors (all cached), then restore the RNG
            pop = self.algo.ask()
            self._tell(pop, loop.score([self._candidate(x, int(checkpoint["generation"])) for x in pop.get("X")]))
            if checkpoint.get("rng") and getattr(self.algo, "random_state", None) is not None:  # pymoo >= 0.6.2
                self.algo.random_state.bit_generator.state = checkpoint["rng"]

    def _sampling(self, checkpoint: dict | None, loop: SearchLoop):
        if checkpoint is not None:
            return np.asarray(checkpoint["population"], dtype=int)
        if self.init == "random":
            from pymoo.operators.sampling.rnd import IntegerRandomSampling

            return IntegerRandomSampling()
        sp = loop.sp
        members = initial_population(sp.space, sp.ctx.ranking, self.pop_size, self.seed, extra=sp.extra_seeds,
                                     **({"ratios": self.ratios} if self.ratios else {}))
        warn_seeds_over_budget(len(members), loop.evaluations - len(sp.cache))
        self.sources = {s.key(): src for s, src in members}
        return np.stack([sp.space.encode(s) for s, _ in members])

    def _candidate(self, x, generation: int | None = None) -> Candidate:
        s = self.loop.sp.space.decode(self.loop.sp.repair(x))
        first_random = self.loop.generation == 0 and not self.sources
        default = "random" if first_random else self.algo_name  # pymoo's own random first generation
        return Candidate(s, self.sources.get(s.key(), default), generation)

    def ask(self, remaining: int) -> list[Candidate]:
        pop = self.algo.ask()
        if pop is None or len(pop) == 0:
            return []
        self._pop = _trim_to_budget(self.loop.sp, pop, remaining)
        return [self._candidate(x) for x in self._pop.get("X")]

    def tell(self, rows: list[dict]) -> None:
        self._tell(self._pop, rows)

    def _tell(self, pop, rows: list[dict]) -> None:
        from pymoo.core.evaluator import Evaluator
        from pymoo.problems.static import StaticProblem

        # StaticProblem deep-copies the problem it wraps: wrap a shell with the same shape, never the SubnetProblem,
        # whose SearchProblem holds the model, its caches and Grams (copied and kept once per generation: +2 GB each
        # on SmolLM2, benchmarks/experiments/memory)
        Evaluator().eval(StaticProblem(_shell(self.problem), **objective_arrays(self.loop.sp, rows)), pop,
                         skip_already_evaluated=False)
        self.algo.tell(infills=pop)

    def state(self) -> dict:
        rs = getattr(self.algo, "random_state", None)
        return {"population": np.asarray(self.algo.pop.get("X"), dtype=int).tolist(),
                "rng": None if rs is None else rs.bit_generator.state}


def run_pymoo(sp: SearchProblem, evaluations: int, pop_size: int = 24, seed: int = 0, algorithm: str = "auto",
              run_dir: str | Path | None = None, resume: bool = False, init: str = "importance",
              ratios: Sequence[float] | None = None, rescore_fronts: int = 1,
              ref_point: Sequence[float] | None = None, progress: bool = True,
              rescore_baselines: bool = False) -> SearchResult:
    """Search until ``evaluations`` distinct subnets are scored (the last generation is trimmed to fit)."""
    return run_driver(sp, PymooDriver(pop_size, seed, algorithm, init, ratios), evaluations, run_dir=run_dir, resume=resume,
                      rescore_fronts=rescore_fronts, ref_point=ref_point, progress=progress, rescore_baselines=rescore_baselines)


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

"""What every search driver shares: the journal, resume, the budget, the progress bar, re-scoring and
writing the run folder. A driver is only the algorithm, in ask/tell shape (as pymoo's
``Algorithm.ask/tell`` and Optuna's ``study.ask/tell``).

The loop::

    start(driver)   open the journal (resume: reload it and the checkpoint), set the objectives up,
                    let the driver build its algorithm / study
    search()        until the budget is met: ask -> score (cached, journaled) -> tell; after each
                    generation promote by successive halving (or re-score near the front), write
                    table/front/checkpoint (checkpointed drivers)
    finish()        take the driver's final rows, re-score the baselines and the front, write the run folder

Drivers are registered in :data:`DRIVERS` (``--driver NAME``; ``pkg.mod:Class`` works too).
"""
from __future__ import annotations

import json
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple

from nas_llm.errors import ConfigError, NasLLMError, RunFolderError
from nas_llm.model.atomic import atomic_write_text
from nas_llm.run import Run
from search_spaces import Subnet
from search_spaces.registry import Registry

from .halving import successive_halving
from .journal import Journal
from .problem import SearchProblem
from .result import SearchResult, first_generation_reference

if TYPE_CHECKING:
    from .config import SearchConfig

JOURNAL = "evaluations.jsonl"
CHECKPOINT = "checkpoint.json"


class AllCandidatesFailed(NasLLMError, ValueError):
    """Every candidate scored so far failed (an objective returned NaN/inf for all of them)."""


class Candidate(NamedTuple):
    """One subnet a driver asks to score. ``generation``/``row_id`` None: the loop's counter / the next id."""

    subnet: Subnet
    source: str
    generation: int | None = None
    row_id: int | None = None


class Driver:
    """A search algorithm: :meth:`ask` proposes candidates, :meth:`tell` receives their rows.

    ``journal_file``: where the loop journals scored rows (None: the driver's own storage keeps
    them, e.g. Optuna trials). ``rescore_file``: where the final full-fidelity re-scores go.
    ``checkpointed``: the loop writes table, front and ``checkpoint.json`` (with :meth:`state`)
    after every generation, and hands that checkpoint back to :meth:`start` on resume.
    """

    name = "driver"
    journal_file: str | None = JOURNAL
    rescore_file: str = JOURNAL
    checkpointed = True

    @classmethod
    def from_config(cls, config: "SearchConfig", sp: SearchProblem) -> "Driver":
        raise NotImplementedError(f"driver {cls.__name__} cannot be built from a SearchConfig")

    @property
    def label(self) -> str:
        return self.name

    def start(self, loop: "SearchLoop", checkpoint: dict | None) -> None:
        self.loop = loop

    def ask(self, remaining: int) -> list[Candidate]:  # pragma: no cover - interface
        """Up to about ``remaining`` new candidates; an empty list ends the search."""
        raise NotImplementedError

    def tell(self, rows: list[dict]) -> None:
        """The rows of the last :meth:`ask`, in its order."""

    def abort(self) -> None:
        """Scoring the last :meth:`ask` raised; release what it holds (e.g. a RUNNING trial)."""

    def state(self) -> dict:
        """What ``checkpoint.json`` must hold to continue exactly (JSON only, never pickle)."""
        return {}

    def done(self) -> int:
        """Evaluations that count towards the budget (distinct subnets by default)."""
        return len(self.loop.sp.cache)

    def generation_done(self) -> bool:
        return True

    def rows(self) -> list[dict]:
        """Every row of the run table at the end (a shared study: all workers' rows)."""
        return self.loop.sp.rows()


DRIVERS: Registry = Registry("search driver", base=Driver)
DRIVERS.add("pymoo", "nas_llm.search.pymoo_driver:PymooDriver")
DRIVERS.add("optuna", "nas_llm.search.optuna_driver:OptunaDriver")
DRIVERS.add("random", "nas_llm.search.random_driver:RandomDriver")


class Progress:
    """A tqdm bar over evaluations with front size and hypervolume in the postfix."""

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


def warn_seeds_over_budget(n_first: int, budget: int) -> None:
    """A budget below the first generation never runs the algorithm: say so (the best seeds come first)."""
    if n_first > budget:
        warnings.warn(f"the budget of {budget} evaluations is smaller than the seeded first generation ({n_first} subnets): "
                      f"the search algorithm never runs; scoring the first {budget} seeds (the dense model and uniform "
                      f"subnets first). Raise --evaluations above {n_first} to search.", UserWarning, stacklevel=3)


class SearchLoop:
    """Budget, journal, resume, progress, re-scoring and run-folder writes around one :class:`Driver`.

    ``write=False``: a worker that joined someone else's study; it scores and tells, but never
    re-scores nor writes the run table (the coordinator does, after all workers are done).
    """

    def __init__(self, sp: SearchProblem, evaluations: int, *, run_dir=None, resume: bool = False, rescore_fronts: int = 1,
                 ref_point=None, progress: bool = True, rescore_baselines: bool = False, write: bool = True,
                 baseline_margin: float = 2.0, seed_margin: float = 0.0):
        self.sp, self.evaluations = sp, int(evaluations)
        self.folder = Run(run_dir) if run_dir is not None else None
        self.resume, self.rescore_fronts, self.progress = resume, rescore_fronts, progress
        self.rescore_baselines, self.write = rescore_baselines, write
        self.baseline_margin, self.seed_margin = float(baseline_margin), float(seed_margin)
        self.ref = None if ref_point is None else [float(v) for v in ref_point]
        self.generation = 0
        self.driver: Driver | None = None
        self._front, self._hv = 0, float("nan")

    def run(self, driver: Driver) -> SearchResult:
        self.start(driver)
        self.search()
        return self.finish()

    # -- start: journal, resume, set-up --------------------------------------------------------
    def start(self, driver: Driver) -> None:
        if self.evaluations < 1:
            raise ConfigError(f"evaluations must be >= 1, got {self.evaluations}")
        self.driver = driver
        checkpoint = self._open(driver)
        if checkpoint is not None:
            self.generation = int(checkpoint["generation"]) + 1
            self.ref = checkpoint.get("reference_point") or self.ref
        self.sp.setup()
        driver.start(self, checkpoint)

    def _open(self, driver: Driver) -> dict | None:
        """Attach the journal (resume: reload it); the checkpoint to continue from, if any."""
        if self.folder is None:
            return None
        if driver.journal_file:
            journal = Journal(self.folder.path / driver.journal_file)
            if self.resume:
                self.sp.restore(journal.load())
            elif journal.has_rows():
                raise RunFolderError(f"{self.folder.path} already holds evaluations; pass resume=True (--resume) to continue it")
            self.sp.record_to(journal)
        ck = self.folder.path / CHECKPOINT
        if self.resume and driver.checkpointed and ck.is_file():
            return json.loads(ck.read_text())
        return None

    # -- search: ask, score, tell ---------------------------------------------------------------
    def search(self) -> None:
        d = self._driver()
        bar = Progress(self.evaluations, d.done(), self.progress, f"search ({d.label})")
        try:
            while (left := self.evaluations - d.done()) > 0:
                batch = d.ask(left)
                if not batch:
                    break
                d.tell(self.score(batch))
                if d.generation_done():
                    self._end_generation(bar.bar is not None)
                bar.update(d.done(), self._front, self._hv)
        finally:
            bar.close()

    def score(self, batch: list[Candidate]) -> list[dict]:
        """The rows of ``batch`` (cached subnets cost nothing); the driver is told when scoring raises."""
        try:
            return [self.sp.evaluate(c.subnet, c.source, self.generation if c.generation is None else c.generation,
                                     row_id=c.row_id) for c in batch]
        except BaseException:
            self._driver().abort()
            raise

    def _end_generation(self, for_bar: bool) -> None:
        res = None
        if self._driver().checkpointed:
            res = self._write_generation()
            self._checkpoint()
        elif for_bar:
            res = SearchResult.from_rows(self.sp.rows(), self.sp.names, self.sp.directions, self.ref)
        if res is not None:
            self._front, self._hv = int(res.table["pareto"].sum()), res.hypervolume
        self._check_failures()
        self.generation += 1

    def _write_generation(self) -> SearchResult:
        """Re-score near the front, fix the reference point (first time), write table/front/history."""
        sp = self.sp
        if sp.halving:
            successive_halving(sp, sp.halving)
        elif self.rescore_fronts > 0:
            sp.rescore(sp.near_front(sp.rows(), self.rescore_fronts))
        rows = sp.rows()
        if self.ref is None and rows:
            self.ref = first_generation_reference(rows, sp.names, sp.directions)
        res = SearchResult.from_rows(rows, sp.names, sp.directions, self.ref)
        if self.folder is not None and self.write:
            res.save(self.folder)
        return res

    def _checkpoint(self) -> None:
        if self.folder is None or not self.write:
            return
        state = {"generation": self.generation, "evaluations": len(self.sp.cache), "reference_point": self.ref,
                 **self._driver().state()}
        atomic_write_text(self.folder.path / CHECKPOINT, json.dumps(state, default=int))

    def _check_failures(self) -> None:
        rows = self.sp.rows()
        if rows and all(self.sp.failed(r) for r in rows):
            raise AllCandidatesFailed(f"every candidate failed ({len(rows)} scored); the first: {rows[0]['reason']} "
                                      f"for subnet id {rows[0]['id']}. Fix the objective (it must return a finite float).")

    # -- finish: final rows, re-scoring, the run folder --------------------------------------------
    def finish(self) -> SearchResult:
        sp, d = self.sp, self._driver()
        sp.restore(d.rows(), replace=True)
        if not self.write:
            return SearchResult.from_rows(sp.rows(), sp.names, sp.directions, self.ref)
        if self.folder is not None:
            sp.record_to(Journal(self.folder.path / d.rescore_file))
        if self.rescore_baselines:  # the ones that meet the constraints (what a pick is compared with) and the
            # dense model (its windows are cached: free), except those the screening already shows far behind another
            # feasible row (SearchProblem.outclassed); the report leaves out baselines still at screening values
            sp.rescore([r for r in sp.baselines() if r.get("source") == "dense" or
                        (r["feasible"] and not sp.outclassed(r, self.baseline_margin))])
        if self.seed_margin > 0:  # the allocation seeds the screen cannot tell from the best (see SearchConfig.seed_margin)
            sp.rescore([r for r in sp.rows() if r.get("source") == "alloc" and r["feasible"]
                        and not sp.outclassed(r, self.seed_margin)])
        res = self._write_generation()
        self._check_failures()
        return res

    def _driver(self) -> Driver:
        if self.driver is None:
            raise RuntimeError("SearchLoop.start(driver) must run first")
        return self.driver


def run_driver(sp: SearchProblem, driver: Driver, evaluations: int, **loop: Any) -> SearchResult:
    """``SearchLoop(sp, evaluations, **loop).run(driver)``: what ``run_pymoo`` & co. call."""
    return SearchLoop(sp, evaluations, **loop).run(driver)


__all__ = ["AllCandidatesFailed", "CHECKPOINT", "Candidate", "DRIVERS", "Driver", "JOURNAL", "Progress", "SearchLoop",
           "run_driver", "warn_seeds_over_budget"]

"""Optuna driver: one study on a persistent storage, shareable by any number of worker processes.

Storage: ``sqlite:///RUN/study.db`` by default; any RDB URL (``postgresql://...``,
``mysql+pymysql://...``) or ``journal:PATH`` (an append-only journal file, safe for several
processes on one machine / a shared file system). Each trial stores the subnet's encoding and
its full table row in user attrs, so the run table is rebuilt from the storage alone.

An ask/tell adapter (``study.ask()`` / ``study.tell()``) for :class:`~nas_llm.search.loop.SearchLoop`.
Budget: ``evaluations`` counts finished trials across all workers; a trial starts only if the
finished trials plus the running ones with a lower number are below the budget, so N workers
together finish exactly N trials. A subnet proposed twice is answered from the cache (user attr
``cached``) and not listed twice in the table. A worker that joins (``--join``) waits up to
``join_timeout`` seconds for the study to appear and never creates it.
"""
from __future__ import annotations

import json
import time
import zlib
from pathlib import Path
from typing import Sequence

from nas_llm.errors import ConfigError, NasLLMError, RunFolderError
from nas_llm.run import Run

from .config import INITS, SAMPLERS
from .journal import Journal
from .loop import Candidate, Driver, SearchLoop, run_driver, warn_seeds_over_budget
from .population import initial_population, seed_ratios
from .problem import SearchProblem
from .result import SearchResult

RESCORED = "rescored.jsonl"
STUDY_SETTINGS = "nas_llm_search"  # study user attr: the SearchConfig of the coordinator (checked by joiners)


class StudyNotFoundError(NasLLMError, FileNotFoundError):
    """``--join`` found no study to join (within ``--join-timeout``)."""


def make_storage(url: str | None, run_dir: str | Path | None):
    """An Optuna storage from a URL, ``journal:PATH``, a ``.log``/``.journal`` path, or the run's SQLite file."""
    import optuna

    if url is None:
        if run_dir is None:
            return optuna.storages.InMemoryStorage()
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{Path(run_dir).resolve() / 'study.db'}"
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        from optuna.storages.journal import JournalFileBackend

        path = url.removeprefix("journal:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(path))
    if "://" not in url:
        raise ConfigError(f"storage {url!r} is not a database URL (sqlite:///file.db, postgresql://...) nor journal:PATH")
    return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)


def _param_names(sp: SearchProblem) -> list[tuple[str, int, int]]:
    return sp.space.variables()


def make_sampler(name: str, seed: int, pop_size: int, n_constraints: int):
    import optuna

    cf = None
    if n_constraints and not hasattr(optuna.trial.Trial, "set_constraint"):  # Optuna < 5
        def cf(ft):  # noqa: E306 - Optuna: values <= 0 are feasible, like pymoo's G
            return ft.user_attrs.get("constraints", [1.0] * n_constraints)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=pop_size, seed=seed, constraints_func=cf)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constraints_func=cf, multivariate=True)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, constraints_func=cf)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"unknown Optuna sampler {name!r}; choose one of {', '.join(SAMPLERS)}")


def rows_from_study(study, run: Run | None = None) -> list[dict]:
    """Table rows of every finished, non-cached trial (plus full-fidelity re-scores from the run folder)."""
    from optuna.trial import TrialState

    rows: dict[str, dict] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("cached") or "row" not in t.user_attrs:
            continue
        row = json.loads(t.user_attrs["row"])
        if row["key"] not in rows or rows[row["key"]]["id"] > row["id"]:
            rows[row["key"]] = row
    if run is not None:
        for r in Journal(run.path / RESCORED).load():
            if r["key"] in rows:
                rows[r["key"]].update({k: v for k, v in r.items() if k not in ("id", "worker", "generation", "source")})
    return sorted(rows.values(), key=lambda r: r["id"])


def open_study(sp: SearchProblem, storage, study_name: str, sampler, create: bool):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if create:
        return optuna.create_study(storage=storage, study_name=study_name, sampler=sampler, directions=sp.directions)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler)
    except KeyError:
        raise StudyNotFoundError(f"no study {study_name!r} in the storage; start it without --join/--resume first") from None
    if [d.name.lower() for d in study.directions] != list(sp.directions):
        raise ConfigError(f"study {study_name!r} optimises {[d.name.lower() for d in study.directions]}, "
                         f"but the objectives ask for {sp.directions}; use the same --objectives")
    return study


def _local_file(url: str | None, run_dir: str | Path | None) -> Path | None:
    """The file a storage lives in (SQLite, journal), or None (a database server)."""
    if url is None:
        return None if run_dir is None else Path(run_dir) / "study.db"
    if url.startswith("journal:") or url.endswith((".log", ".journal")):
        return Path(url.removeprefix("journal:"))
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return None


def _study_names(store) -> list[str]:
    import optuna

    return [] if isinstance(store, optuna.storages.InMemoryStorage) else optuna.get_all_study_names(store)


def wait_for_study(url: str | None, run_dir: str | Path | None, study_name: str, timeout: float):
    """The storage once it holds ``study_name`` (polled for ``timeout`` seconds); never creates the study."""
    deadline, store = time.monotonic() + max(0.0, timeout), None
    while True:
        if store is None and (_local_file(url, run_dir) is None or _local_file(url, run_dir).is_file()):
            store = make_storage(url, run_dir)  # a file storage is opened only once its creator made it
        if store is not None and study_name in _study_names(store):
            return store
        if time.monotonic() >= deadline:
            where = url or _local_file(url, run_dir)
            raise StudyNotFoundError(f"no study {study_name!r} in {where} after waiting {timeout:g} s; start the coordinator "
                                     f"(the same command without --join) first, or raise --join-timeout")
        time.sleep(min(1.0, max(0.05, timeout / 50)))


def prepare_study(sp: SearchProblem, storage: str | None, run_dir: str | Path | None, study_name: str = "nas-llm",
                  sampler: str = "nsga2", seed: int = 0, pop_size: int = 24, resume: bool = False, join: bool = False,
                  init: str = "importance", ratios: Sequence[float] | None = None, join_timeout: float = 0.0,
                  budget: int | None = None):
    """Create the study (enqueueing the importance-initialised first generation) or load it to resume/join."""
    from optuna.trial import TrialState

    if init not in INITS:
        raise ConfigError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")
    store = wait_for_study(storage, run_dir, study_name, join_timeout) if join else make_storage(storage, run_dir)
    exists = study_name in _study_names(store)
    if exists and not (resume or join):
        raise RunFolderError(f"study {study_name!r} already exists in {storage or run_dir}; pass --resume to continue it "
                             f"or --join to add a worker")
    smp = make_sampler(sampler, seed + (zlib.crc32(str(sp.worker).encode()) % 1000 if join else 0), pop_size, len(sp.constraints))
    study = open_study(sp, store, study_name, smp, create=not exists)
    if exists and resume and not join:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            store.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    if not exists and init == "importance":
        members = initial_population(sp.space, sp.ctx.ranking, pop_size, seed, extra=sp.extra_seeds,
                                     **({"ratios": ratios} if ratios else {}))
        if budget is not None:
            warn_seeds_over_budget(len(members), budget)
        for s, src in members:
            x = sp.space.encode(s)
            study.enqueue_trial({n: int(v) for (n, _, _), v in zip(_param_names(sp), x)}, user_attrs={"source": src})
    return study


class OptunaDriver(Driver):
    """``study.ask()`` one trial (or stop at the budget), ``study.tell()`` its values, constraints and row."""

    name = "optuna"
    journal_file = None  # rows live in the trials' user attrs
    rescore_file = RESCORED
    checkpointed = False  # the storage is the checkpoint

    def __init__(self, sampler: str = "nsga2", pop_size: int = 24, seed: int = 0, storage: str | None = None,
                 study_name: str = "nas-llm", join: bool = False, init: str = "importance",
                 ratios: Sequence[float] | None = None, shared: bool | None = None, join_timeout: float = 0.0, config=None):
        self.sampler, self.pop_size, self.seed, self.storage, self.study_name = sampler, pop_size, seed, storage, study_name
        self.join, self.init, self.ratios, self.join_timeout, self.config = join, init, ratios, join_timeout, config
        self.shared = (join or storage is not None) if shared is None else shared
        self._trial, self._cached, self._number = None, False, -1

    @classmethod
    def from_config(cls, config, sp: SearchProblem) -> "OptunaDriver":
        return cls(config.sampler, config.pop_size, config.seed, config.storage, config.study_name, config.join, config.init,
                   seed_ratios(sp.constraints), config.workers > 1 or config.join or config.storage is not None,
                   config.join_timeout, config)

    @property
    def label(self) -> str:
        return f"optuna {self.sampler}"

    def start(self, loop: SearchLoop, checkpoint: dict | None) -> None:
        super().start(loop, checkpoint)
        run_dir = loop.folder.path if loop.folder is not None else None
        self.study = prepare_study(loop.sp, self.storage, run_dir, self.study_name, self.sampler, self.seed, self.pop_size,
                                   loop.resume, self.join, self.init, self.ratios, self.join_timeout, loop.evaluations)
        self._check_settings()
        loop.sp.restore(rows_from_study(self.study, loop.folder))
        self.params = _param_names(loop.sp)

    def _check_settings(self) -> None:
        """The study remembers its coordinator's settings; a joiner or a resume with other ones is refused."""
        if self.config is None:
            return
        old = self.study.user_attrs.get(STUDY_SETTINGS)
        if old is None:
            self.study.set_user_attr(STUDY_SETTINGS, self.config.to_json()["search"])
            return
        diffs = type(self.config).from_json({"search": old}, out=self.config.out).diff(self.config)
        if diffs:
            raise ConfigError(f"study {self.study_name!r} was started with other settings ({'; '.join(diffs)}); "
                              f"join it with the coordinator's settings")

    def ask(self, remaining: int) -> list[Candidate]:
        from optuna.trial import TrialState

        trial = self.study.ask()
        live = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        if sum(1 for t in live if t.state == TrialState.COMPLETE or t.number < trial.number) >= self.loop.evaluations:
            self.study.tell(trial, state=TrialState.PRUNED)  # the budget is taken (by finished or earlier trials)
            return []
        sp = self.loop.sp
        s = sp.space.decode(sp.repair([trial.suggest_int(n, lo, hi) for n, lo, hi in self.params]))
        if self.shared and s.key() not in sp.cache:  # another worker may have scored it meanwhile
            sp.restore(rows_from_study(self.study), overwrite=False)
        self._trial, self._cached, self._number = trial, s.key() in sp.cache, trial.number
        return [Candidate(s, trial.user_attrs.get("source", self.sampler), trial.number // self.pop_size, trial.number)]

    def tell(self, rows: list[dict]) -> None:
        sp, trial, row = self.loop.sp, self._trial, rows[0]
        trial.set_user_attr("key", row["key"])
        trial.set_user_attr("encoding", json.loads(row["encoding"]))
        trial.set_user_attr("cached", bool(self._cached))
        if not self._cached:
            trial.set_user_attr("row", json.dumps(row, default=float))
        if sp.constraints:
            g = [float(v) for v in sp.violations(row)]
            trial.set_user_attr("constraints", g)
            if hasattr(trial, "set_constraint"):  # Optuna >= 5: samplers read these
                for c, v in zip(sp.constraints, g):
                    trial.set_constraint(f"{c.objective}[{c.lo},{c.hi}]", v)
        self.study.tell(trial, sp.objective_values(row))
        self._trial = None

    def abort(self) -> None:
        from optuna.trial import TrialState

        if self._trial is not None:
            trial, self._trial = self._trial, None
            try:
                self.study.tell(trial, state=TrialState.FAIL)
            except Exception:  # noqa: BLE001 - the original error matters; a resume marks RUNNING trials failed anyway
                pass

    def done(self) -> int:
        return _n_complete(self.study)

    def generation_done(self) -> bool:
        return self._number % self.pop_size == self.pop_size - 1

    def rows(self) -> list[dict]:
        return rows_from_study(self.study, self.loop.folder)


def run_optuna(sp: SearchProblem, evaluations: int, sampler: str = "nsga2", pop_size: int = 24, seed: int = 0,
               run_dir: str | Path | None = None, storage: str | None = None, study_name: str = "nas-llm",
               resume: bool = False, join: bool = False, init: str = "importance", ratios: Sequence[float] | None = None,
               rescore_fronts: int = 1, ref_point: Sequence[float] | None = None, progress: bool = True,
               write: bool = True, shared: bool | None = None, join_timeout: float = 0.0) -> SearchResult:
    """Run (or join, or resume) a study until ``evaluations`` trials are finished in total.

    ``join=True``: another process created the study (wait up to ``join_timeout`` s for it); just
    work on it. ``resume=True``: continue a killed run (trials left RUNNING by the dead process are
    marked FAIL and re-proposed). ``shared``: other processes work on the same study, so look up
    their scores before evaluating (default: when joining or on an explicit storage).
    ``write=False``: neither re-score nor write the run table (a worker; the coordinator writes).
    """
    driver = OptunaDriver(sampler, pop_size, seed, storage, study_name, join, init, ratios, shared, join_timeout)
    return run_driver(sp, driver, evaluations, run_dir=run_dir, resume=resume, rescore_fronts=rescore_fronts,
                      ref_point=ref_point, progress=progress, write=write)


def _n_complete(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def finish(sp: SearchProblem, storage: str | None, run_dir: str | Path, study_name: str = "nas-llm",
           rescore_fronts: int = 1, pop_size: int = 24, ref_point: Sequence[float] | None = None,
           rescore_baselines: bool = False) -> SearchResult:
    """Rebuild the run table from the storage (after all workers are done), re-score and write it."""
    loop = SearchLoop(sp, 1, run_dir=run_dir, rescore_fronts=rescore_fronts, ref_point=ref_point, progress=False,
                      rescore_baselines=rescore_baselines)
    loop.start(OptunaDriver(pop_size=pop_size, storage=storage, study_name=study_name, join=True))
    return loop.finish()

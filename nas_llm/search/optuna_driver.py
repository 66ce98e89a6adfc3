"""Optuna driver: one study on a persistent storage, shareable by any number of worker processes.

Storage: ``sqlite:///RUN/study.db`` by default; any RDB URL (``postgresql://...``,
``mysql+pymysql://...``) or ``journal:PATH`` (an append-only journal file, safe for several
processes on one machine / a shared file system). Each trial stores the subnet's encoding and
its full table row in user attrs, so the run table is rebuilt from the storage alone.

Budget: ``evaluations`` counts finished trials across all workers; a trial starts only if the
finished trials plus the running ones with a lower number are below the budget, so N workers
together finish exactly N trials. A subnet proposed twice is answered from the cache (user attr
``cached``) and not listed twice in the table.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Sequence

from nas_llm.errors import ConfigError
from nas_llm.run import Run

from .population import initial_population
from .problem import SearchProblem
from .pymoo_driver import Progress
from .result import SearchResult, default_reference

RESCORED = "rescored.jsonl"
SAMPLERS = ("nsga2", "tpe", "gp", "random")


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
    xl, xu = sp.space.bounds()
    out = []
    for i in range(sp.space.num_layers):
        for j, what in enumerate(("kv", "nb", "keep")):
            out.append((f"{what}_{i}", int(xl[3 * i + j]), int(xu[3 * i + j])))
    return out


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
    if run is not None and (run.path / RESCORED).is_file():
        for line in (run.path / RESCORED).read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
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
        raise FileNotFoundError(f"no study {study_name!r} in the storage; start it without --join/--resume first") from None
    if [d.name.lower() for d in study.directions] != list(sp.directions):
        raise ConfigError(f"study {study_name!r} optimises {[d.name.lower() for d in study.directions]}, "
                         f"but the objectives ask for {sp.directions}; use the same --objectives")
    return study


def prepare_study(sp: SearchProblem, storage: str | None, run_dir: str | Path | None, study_name: str = "nas-llm",
                  sampler: str = "nsga2", seed: int = 0, pop_size: int = 24, resume: bool = False, join: bool = False,
                  init: str = "importance", ratios: Sequence[float] | None = None):
    """Create the study (enqueueing the importance-initialised first generation) or load it to resume/join."""
    import optuna
    from optuna.trial import TrialState

    if init not in ("importance", "random"):
        raise ConfigError(f"unknown init {init!r}; choose importance or random")
    store = make_storage(storage, run_dir)
    names = optuna.get_all_study_names(store) if not isinstance(store, optuna.storages.InMemoryStorage) else []
    exists = study_name in names
    if exists and not (resume or join):
        raise FileExistsError(f"study {study_name!r} already exists in {storage or run_dir}; pass --resume to continue it "
                              f"or --join to add a worker")
    smp = make_sampler(sampler, seed + (zlib.crc32(str(sp.worker).encode()) % 1000 if join else 0), pop_size, len(sp.constraints))
    study = open_study(sp, store, study_name, smp, create=not exists)
    if exists and resume and not join:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            store.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    if not exists and init == "importance":
        for s, src in initial_population(sp.space, sp.ctx.ranking, pop_size, seed, **({"ratios": ratios} if ratios else {})):
            x = sp.space.encode(s)
            study.enqueue_trial({n: int(v) for (n, _, _), v in zip(_param_names(sp), x)}, user_attrs={"source": src})
    return study


def run_optuna(sp: SearchProblem, evaluations: int, sampler: str = "nsga2", pop_size: int = 24, seed: int = 0,
               run_dir: str | Path | None = None, storage: str | None = None, study_name: str = "nas-llm",
               resume: bool = False, join: bool = False, init: str = "importance", ratios: Sequence[float] | None = None,
               rescore_fronts: int = 1, ref_point: Sequence[float] | None = None, progress: bool = True,
               write: bool = True, shared: bool | None = None) -> SearchResult:
    """Run (or join, or resume) a study until ``evaluations`` trials are finished in total.

    ``join=True``: another process created the study; just work on it. ``resume=True``: continue a
    killed run (trials left RUNNING by the dead process are marked FAIL and re-proposed).
    ``shared``: other processes work on the same study, so look up their scores before evaluating
    (default: when joining or on an explicit storage).
    """
    import optuna
    from optuna.trial import TrialState

    if evaluations < 1:
        raise ConfigError(f"evaluations must be >= 1, got {evaluations}")
    run = Run(run_dir) if run_dir is not None else None
    shared = (join or storage is not None) if shared is None else shared
    sp.setup()
    study = prepare_study(sp, storage, run_dir, study_name, sampler, seed, pop_size, resume, join, init, ratios)
    for r in rows_from_study(study, run):
        sp.cache[r["key"]] = r
    params = _param_names(sp)
    bar = Progress(evaluations, _n_complete(study), progress, f"search (optuna {sampler})")

    def objective(trial: "optuna.Trial"):
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        ahead = sum(1 for t in done if t.state == TrialState.COMPLETE or t.number < trial.number)
        if ahead >= evaluations:
            trial.study.stop()
            raise optuna.TrialPruned("budget reached")
        x = [trial.suggest_int(n, lo, hi) for n, lo, hi in params]
        s = sp.space.decode(sp.repair(x))
        if shared and s.key() not in sp.cache:  # another worker may have scored it meanwhile
            for r in rows_from_study(study):
                sp.cache.setdefault(r["key"], r)
        cached = s.key() in sp.cache
        row = sp.evaluate(s, trial.user_attrs.get("source", sampler), trial.number // pop_size, row_id=trial.number)
        trial.set_user_attr("key", row["key"])
        trial.set_user_attr("encoding", json.loads(row["encoding"]))
        trial.set_user_attr("cached", bool(cached))
        if not cached:
            trial.set_user_attr("row", json.dumps(row, default=float))
        if sp.constraints:
            g = [float(v) for v in sp.violations(row)]
            trial.set_user_attr("constraints", g)
            if hasattr(trial, "set_constraint"):  # Optuna >= 5: samplers read these
                for c, v in zip(sp.constraints, g):
                    trial.set_constraint(f"{c.objective}[{c.lo},{c.hi}]", v)
        return tuple(float(row[c]) for c in sp.search_columns)

    state = {"ref": None if ref_point is None else list(ref_point), "hv": float("nan")}

    def tick(study_, trial) -> None:
        if bar.bar is None:
            return
        if trial.number % pop_size == pop_size - 1 and sp.cache:  # hypervolume once per generation
            import pandas as pd

            rows = list(sp.cache.values())
            if state["ref"] is None:
                state["ref"] = default_reference(pd.DataFrame(rows), sp.names, sp.directions)
            state["hv"] = SearchResult.from_rows(rows, sp.names, sp.directions, state["ref"]).hypervolume
        bar.update(_n_complete(study_), len(study_.best_trials), state["hv"])

    try:
        if _n_complete(study) < evaluations:
            study.optimize(objective, callbacks=[tick], gc_after_trial=False, catch=())
    finally:
        bar.close()
    if not write:
        return SearchResult.from_rows(rows_from_study(study, run), sp.names, sp.directions, ref_point)
    return finish_study(sp, study, run, rescore_fronts, pop_size, ref_point)


def _n_complete(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def finish(sp: SearchProblem, storage: str | None, run_dir: str | Path, study_name: str = "nas-llm",
           rescore_fronts: int = 1, pop_size: int = 24, ref_point: Sequence[float] | None = None,
           rescore_baselines: bool = False) -> SearchResult:
    """Rebuild the run table from the storage (after all workers are done) and write it."""
    import optuna

    study = optuna.load_study(study_name=study_name, storage=make_storage(storage, run_dir))
    return finish_study(sp, study, Run(run_dir), rescore_fronts, pop_size, ref_point, rescore_baselines)


def finish_study(sp: SearchProblem, study, run: Run | None, rescore_fronts: int, pop_size: int,
                 ref_point: Sequence[float] | None = None, rescore_baselines: bool = False) -> SearchResult:
    """Re-score near the front (and optionally the baselines) at full fidelity, then write the table, history and front."""
    import pandas as pd

    rows = rows_from_study(study, run)
    sp.cache = {r["key"]: r for r in rows}
    if (rescore_fronts > 0 or rescore_baselines) and run is not None:
        sp.journal = run.path / RESCORED
        if rescore_fronts > 0:
            sp.rescore(sp.near_front(rows, rescore_fronts))
        if rescore_baselines:
            sp.rescore(sp.baselines())
        rows = rows_from_study(study, run)
    ref = ref_point
    if ref is None and rows:
        df = pd.DataFrame(rows)
        ref = default_reference(df[df["generation"] == df["generation"].min()], sp.names, sp.directions)
    res = SearchResult.from_rows(rows, sp.names, sp.directions, ref)
    if run is not None:
        res.save(run)
    return res


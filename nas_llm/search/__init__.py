"""Multi-objective subnet search: one config, one problem, one loop, three drivers (pymoo, Optuna, random).

From settings to a run folder (what the CLI, the demo and the benchmarks do)::

    from nas_llm.search import SearchConfig, run_search
    res = run_search(SearchConfig(out="runs/demo", objectives=["perplexity", "latency_lut"], evaluations=200))

Or declare the problem yourself and run it with any driver::

    from nas_llm.search import SearchProblem, run_pymoo, run_optuna
    sp = SearchProblem(ctx, ["perplexity", "latency_lut"], ["params_ratio in [0.5, 0.9]"], screen_fidelity=0.25)
    res = run_pymoo(sp, evaluations=200, run_dir="runs/demo")      # NSGA-II, checkpoint every generation
    res.front                                                      # DataFrame of the Pareto set

or ``nas-llm search --model smollm2-135m --out runs/NAME [--driver pymoo|optuna|random] [--resume]``.

Distributed search (Optuna driver): N workers share one study through its storage.

* One machine, N processes: ``nas-llm search --driver optuna --workers N --out runs/NAME``
  (the first process creates the study in ``runs/NAME/study.db`` and starts N-1 workers that join it;
  it writes the table when all are done). For more than a few processes prefer a journal file:
  ``--storage journal:runs/NAME/study.log``.
* Several machines: create the study once, then start workers anywhere that can reach the database::

      nas-llm search --driver optuna --storage postgresql://user:pw@host/db --out runs/NAME --evaluations 400
      # on every other machine (same arguments, plus --join and a distinct --worker-id):
      nas-llm search --driver optuna --storage postgresql://user:pw@host/db --out runs/NAME --evaluations 400 --join --worker-id 2

  ``--evaluations`` is the total over all workers (each trial checks the shared count before it
  starts). A ``--join`` worker waits up to ``--join-timeout`` s for the study, never creates it, and
  never writes the run folder (the coordinator holds ``RUN/.lock`` and writes it). When every worker has finished, rewrite the run table from the storage with the first
  command plus ``--resume`` (nothing is re-evaluated: the budget is already met).
* ``--resume`` after a crash continues the study; trials the dead process left RUNNING are marked
  FAIL and proposed again. The pymoo driver resumes from ``checkpoint.json`` + ``evaluations.jsonl``.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SearchConfig": ".config", "SearchProblem": ".problem", "SearchResult": ".result", "SearchLoop": ".loop",
    "Driver": ".loop", "DRIVERS": ".loop", "Candidate": ".loop", "run_search": ".runner",
    "run_pymoo": ".pymoo_driver", "pymoo_problem": ".pymoo_driver", "run_optuna": ".optuna_driver",
    "run_random": ".random_driver", "initial_population": ".population",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Lazy (PEP 562): ``nas-llm search --help`` and ``SearchConfig`` do not import torch, pymoo or optuna."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nas_llm.search' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

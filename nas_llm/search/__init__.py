"""Multi-objective subnet search: one problem, two drivers (pymoo, Optuna), one result type.

Declare the problem once and run it with either driver::

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
  starts). When every worker has finished, rewrite the run table from the storage with the first
  command plus ``--resume`` (nothing is re-evaluated: the budget is already met).
* ``--resume`` after a crash continues the study; trials the dead process left RUNNING are marked
  FAIL and proposed again. The pymoo driver resumes from ``checkpoint.json`` + ``evaluations.jsonl``.
"""
from .optuna_driver import run_optuna
from .population import initial_population
from .problem import SearchProblem
from .pymoo_driver import pymoo_problem, run_pymoo
from .random_driver import run_random
from .result import SearchResult

__all__ = ["SearchProblem", "SearchResult", "run_pymoo", "run_optuna", "run_random", "pymoo_problem", "initial_population"]

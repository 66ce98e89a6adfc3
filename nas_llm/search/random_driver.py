"""Pure random search: the baseline the importance-initialised NSGA-II has to beat.

Draws ``space.sample(rng, p_drop)`` in a fixed seeded order; on resume the same order is
replayed and cached subnets cost nothing, so a killed run continues exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from nas_llm.errors import ConfigError
from nas_llm.run import Run

from .problem import SearchProblem
from .pymoo_driver import JOURNAL, Progress, finish_generation
from .result import SearchResult


def run_random(sp: SearchProblem, evaluations: int, batch: int = 24, seed: int = 0, p_drop: float = 0.1,
               run_dir: str | Path | None = None, resume: bool = False, rescore_fronts: int = 1,
               ref_point: Sequence[float] | None = None, progress: bool = True,
               rescore_baselines: bool = False) -> SearchResult:
    if evaluations < 1:
        raise ConfigError(f"evaluations must be >= 1, got {evaluations}")
    run = Run(run_dir) if run_dir is not None else None
    if run is not None:
        sp.journal = run.path / JOURNAL
        if resume:
            sp.load_journal()
        elif sp.journal.is_file() and sp.journal.stat().st_size:
            raise FileExistsError(f"{run.path} already holds evaluations; pass resume=True (--resume) to continue it")
    sp.setup()
    rng = np.random.default_rng(seed)
    ref = None if ref_point is None else [float(v) for v in ref_point]
    bar = Progress(evaluations, len(sp.cache), progress, "search (random)")
    res = None
    draws = 0
    try:
        while len(sp.cache) < evaluations and draws < 1000 * evaluations:
            gen_start = len(sp.cache)
            generation = gen_start // batch
            while len(sp.cache) < min(evaluations, gen_start + batch) and draws < 1000 * evaluations:
                draws += 1
                sp.evaluate(sp.space.sample(rng, p_drop), "random", generation)
            res, ref = finish_generation(sp, run, ref, rescore_fronts)
            bar.update(len(sp.cache), int(res.table["pareto"].sum()), res.hypervolume)
    finally:
        bar.close()
    if rescore_baselines and sp.rescore(sp.baselines()):
        res = None
    if res is None:
        res, ref = finish_generation(sp, run, ref, rescore_fronts)
    return res

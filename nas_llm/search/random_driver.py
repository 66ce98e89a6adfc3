"""Pure random search: the baseline the importance-initialised NSGA-II has to beat.

Draws ``space.sample(rng, p_drop)`` in a fixed seeded order, ``batch`` new subnets per generation;
on resume the same order is replayed and subnets already in the journal are skipped, so a killed
run continues exactly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .loop import Candidate, Driver, SearchLoop, run_driver
from .problem import SearchProblem
from .result import SearchResult


class RandomDriver(Driver):
    name = "random"

    def __init__(self, batch: int = 24, seed: int = 0, p_drop: float = 0.1):
        self.batch, self.seed, self.p_drop = batch, seed, p_drop

    @classmethod
    def from_config(cls, config, sp: SearchProblem) -> "RandomDriver":
        return cls(batch=config.pop_size, seed=config.seed)

    def start(self, loop: SearchLoop, checkpoint: dict | None) -> None:
        super().start(loop, checkpoint)
        self.rng = np.random.default_rng(self.seed)
        self.draws, self.max_draws = 0, 1000 * loop.evaluations

    def ask(self, remaining: int) -> list[Candidate]:
        sp, out, seen = self.loop.sp, [], set()
        while len(out) < min(self.batch, remaining) and self.draws < self.max_draws:
            self.draws += 1
            s = sp.space.sample(self.rng, self.p_drop)
            if s.key() not in sp.cache and s.key() not in seen:
                seen.add(s.key())
                out.append(Candidate(s, "random"))
        return out


def run_random(sp: SearchProblem, evaluations: int, batch: int = 24, seed: int = 0, p_drop: float = 0.1,
               run_dir: str | Path | None = None, resume: bool = False, rescore_fronts: int = 1,
               ref_point: Sequence[float] | None = None, progress: bool = True,
               rescore_baselines: bool = False) -> SearchResult:
    return run_driver(sp, RandomDriver(batch, seed, p_drop), evaluations, run_dir=run_dir, resume=resume,
                      rescore_fronts=rescore_fronts, ref_point=ref_point, progress=progress, rescore_baselines=rescore_baselines)

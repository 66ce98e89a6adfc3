"""Successive halving over fidelities (ASHA's promotion rule, multi-objective).

Every candidate is scored at the lowest rung (``--screen``: a fraction of the calibration windows).
After each generation, at every rung, the best ``1/eta`` of the feasible rows measured there -- by
non-dominated rank, then crowding distance -- move up one rung. The rungs are ``screen * step**k`` up to
1 (all windows, float32); ``step`` is ``eta`` in classic successive halving, and a separate setting here
(``--rung-step``) because on band searches a finer ladder with a stricter share was cheaper for the same
picks (eta 8, step 4: ``benchmarks/search_speed.py replay``). Only rows measured at full fidelity may be
on the front (``nas_llm.front.eligible``), so the front never holds a cheap estimate; the rung values stay
in the table (``NAME@f`` columns) for the record. With ``--screen 0.125 --halving 4 --rung-step 4`` (one
window of eight, then four, then all eight) 96 feasible candidates cost about ``96 + 24 * 3`` screening
window-scores and ``6 * 8`` full ones, against ``96 * 2 + 25 * 6`` for screening on two and re-scoring the
whole first front (run r80L). ASHA re-ranks at every generation, so in practice more rows climb than
``n / eta`` (38 and 18 of 96 in run s80-0 with eta 4; 22 and 4 with eta 8, replayed).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from nas_llm.errors import ConfigError

if TYPE_CHECKING:
    from .problem import SearchProblem


def ladder_step(step: int, eta: int) -> int:
    """The factor between rungs: ``--rung-step`` (0 means ``eta``, classic halving); 0 without halving."""
    return (int(step) or int(eta)) if eta else 0


def ladder(screen: float | None, step: int) -> list[float]:
    """The rung fidelities ``screen, screen*step, ..., 1`` (``[1]`` without screening)."""
    if screen is None or screen >= 1:
        return [1.0]
    if step < 2:
        raise ConfigError(f"successive halving needs a rung step >= 2 (each rung step x the last), got {step}")
    out = [float(screen)]
    while out[-1] * step < 1 - 1e-9:
        out.append(out[-1] * step)
    return out + [1.0]


def best_fraction(F: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` best rows of the minimisation matrix ``F``: whole non-dominated fronts first,
    the last front cut by crowding distance (largest first, as NSGA-II's survival)."""
    if k <= 0 or not len(F):
        return []
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    out: list[int] = []
    for front in NonDominatedSorting().do(np.asarray(F, dtype=float), n_stop_if_ranked=k):
        front = [int(i) for i in front]
        if len(out) + len(front) <= k:
            out += front
            continue
        cd = calc_crowding_distance(np.asarray(F, dtype=float)[front]) if len(front) > 2 else np.full(len(front), np.inf)
        order = sorted(range(len(front)), key=lambda j: (-cd[j], front[j]))
        out += [front[j] for j in order[: k - len(out)]]
        break
    return out


def promotions(sp: "SearchProblem", rows: Sequence[dict], fidelity: float, eta: int) -> list[dict]:
    """Rows at rung ``fidelity`` (not higher) in the best ``ceil(n / eta)`` of the ``n`` feasible rows measured there."""
    at = [r for r in rows if not sp.failed(r) and r["feasible"] and sp.has_value_at(r, fidelity)]
    if not at:
        return []
    F = np.stack([sp.values_at(r, fidelity) for r in at])
    chosen = best_fraction(F, math.ceil(len(at) / eta))
    return [at[i] for i in chosen if float(at[i].get("fidelity", 1.0)) < _next(sp.rungs, fidelity) - 1e-12]


def _next(rungs: Sequence[float], f: float) -> float:
    return next((r for r in rungs if r > f + 1e-12), 1.0)


def successive_halving(sp: "SearchProblem", eta: int) -> int:
    """Promote rung by rung (lowest first, so a row may climb several rungs in one call); returns the promotions."""
    n = 0
    for f in sp.rungs[:-1]:
        n += sp.promote(promotions(sp, sp.rows(), f, eta), _next(sp.rungs, f))
    return n


__all__ = ["ladder", "ladder_step", "best_fraction", "promotions", "successive_halving"]

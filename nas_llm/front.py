"""The Pareto front of a search: which rows may be on it, who is non-dominated, how much it covers, where the knee is.

The one definition of the front that search, select, report and export share: the *eligible* rows
(feasible, every objective a finite number, measured at full fidelity), the front among them, and
the *effective* table (the values an export ships: reformed where reformed). Objectives come in as
plain names and directions, so this module depends on nothing of ours.

Thin wrappers over pymoo so every command (search, report, select) agrees on the same maths:
non-dominated sorting (``pymoo.util.nds``), hypervolume (``pymoo.indicators.hv.HV``), high
trade-off points (``pymoo.mcdm.high_tradeoff``) and the achievement scalarisation function
(``pymoo.decomposition.asf``). All functions take an ``(n, m)`` objective matrix ``F`` and an
optional list of directions ("minimize"/"maximize", default all minimise); maximised columns are
negated internally so callers never flip signs themselves.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

from nas_llm.errors import ConfigError

Directions = Sequence[str] | None


def _as_matrix(F, directions: Directions = None) -> np.ndarray:
    """``F`` as a float (n, m) minimisation matrix; errors name the expected shape."""
    A = np.asarray(F, dtype=float)
    if A.ndim == 1:
        A = A.reshape(-1, 1) if A.size else A.reshape(0, 1)
    if A.ndim != 2:
        raise ConfigError(f"objective values must be a 2-D array (n_points, n_objectives), got shape {A.shape}")
    if directions is not None:
        if len(directions) != A.shape[1]:
            raise ConfigError(f"{len(directions)} directions given for {A.shape[1]} objective columns")
        bad = [d for d in directions if d not in ("minimize", "maximize")]
        if bad:
            raise ConfigError(f"direction must be 'minimize' or 'maximize', got {bad[0]!r}")
        sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
        A = A * sign
    if A.size and not np.all(np.isfinite(A)):
        raise ConfigError("objective values contain NaN or infinity; drop or repair those rows first")
    return A


def pareto_mask(F, directions: Directions = None, feasible=None) -> np.ndarray:
    """Boolean mask of non-dominated rows (duplicates of a front point are all on the front).

    ``feasible``: optional boolean mask; infeasible rows are never on the front and do not
    dominate anything.
    """
    A = _as_matrix(F, directions)
    n = A.shape[0]
    mask = np.zeros(n, dtype=bool)
    idx = np.arange(n) if feasible is None else np.flatnonzero(np.asarray(feasible, dtype=bool))
    if idx.size == 0:
        return mask
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    front = NonDominatedSorting().do(A[idx], only_non_dominated_front=True)
    mask[idx[np.asarray(front, dtype=int)]] = True
    return mask


def reference_point(F, directions: Directions = None, margin: float = 0.1) -> np.ndarray:
    """The nadir of ``F`` pushed out by ``margin`` of the range (in minimisation space).

    Returned in the caller's sign convention (maximised columns are not negated).
    """
    A = _as_matrix(F, directions)
    if A.shape[0] == 0:
        raise ConfigError("cannot build a reference point from zero points")
    lo, hi = A.min(axis=0), A.max(axis=0)
    span = np.where(hi > lo, hi - lo, np.maximum(np.abs(hi), 1.0))
    ref = hi + margin * span
    if directions is not None:
        ref = ref * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return ref


def hypervolume(F, ref_point, directions: Directions = None, feasible=None) -> float:
    """Hypervolume dominated by ``F`` up to ``ref_point`` (pymoo ``HV``); points beyond it count 0.

    ``ref_point`` is in the caller's sign convention (same as ``F``).
    """
    A = _as_matrix(F, directions)
    ref = np.asarray(ref_point, dtype=float).ravel()
    if ref.shape[0] != A.shape[1]:
        raise ConfigError(f"reference point has {ref.shape[0]} values, F has {A.shape[1]} objectives")
    if directions is not None:
        ref = ref * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    if feasible is not None:
        A = A[np.asarray(feasible, dtype=bool)]
    A = A[np.all(A < ref, axis=1)]
    if A.shape[0] == 0:
        return 0.0
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=ref)(A))


def _normalised(A: np.ndarray) -> np.ndarray:
    lo, hi = A.min(axis=0), A.max(axis=0)
    return (A - lo) / np.where(hi > lo, hi - lo, 1.0)


def knee_points(F, directions: Directions = None) -> np.ndarray:
    """Indices (into ``F``) of pymoo's high trade-off points of the front of ``F``.

    Falls back to ``[knee_index(F)]`` when pymoo finds no outlier (e.g. fewer than 3 points).
    """
    A = _as_matrix(F, directions)
    front = np.flatnonzero(pareto_mask(A))
    if front.size == 0:
        return np.zeros(0, dtype=int)
    if front.size >= 3:
        from pymoo.mcdm.high_tradeoff import HighTradeoffPoints

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = HighTradeoffPoints().do(_normalised(A[front]))
        if found is not None and len(found):
            return np.sort(front[np.asarray(found, dtype=int)])
    return np.array([knee_index(A)], dtype=int)


def knee_index(F, directions: Directions = None) -> int:
    """Index of the single knee: the front point farthest from the hyperplane through the
    normalised extreme points (Das 1999); the best-balanced point (min ASF with equal weights)
    when the front has fewer than ``m`` extremes."""
    A = _as_matrix(F, directions)
    front = np.flatnonzero(pareto_mask(A))
    if front.size == 0:
        raise ConfigError("knee of an empty set")
    if front.size <= 2:
        return int(front[asf_index(A[front], np.ones(A.shape[1]))])
    N = _normalised(A[front])
    m = N.shape[1]
    # hyperplane sum(x) = 1 passes through the unit extremes of a normalised front
    dist = (1.0 - N.sum(axis=1)) / np.sqrt(m)
    return int(front[int(np.argmax(dist))])


def asf_index(F, weights, directions: Directions = None, feasible=None) -> int:
    """Row minimising pymoo's ASF with ``weights`` (importance per objective, larger = matters more)
    on the front normalised to [0, 1]; ties go to the lower index."""
    A = _as_matrix(F, directions)
    w = np.asarray(weights, dtype=float).ravel()
    if w.shape[0] != A.shape[1]:
        raise ConfigError(f"{w.shape[0]} weights for {A.shape[1]} objectives")
    if np.any(w < 0) or not np.any(w > 0):
        raise ConfigError(f"weights must be >= 0 with at least one > 0, got {w.tolist()}")
    rows = np.flatnonzero(pareto_mask(A, feasible=feasible))
    if rows.size == 0:
        raise ConfigError("no feasible point to choose from")
    from pymoo.decomposition.asf import ASF

    N = _normalised(A[rows])
    # ASF divides by the weight: a larger importance must shrink the distance, so invert it
    inv = np.where(w > 0, 1.0 / np.where(w > 0, w, 1.0), 1e10)
    vals = ASF().do(N, inv / inv[np.isfinite(inv)].min(), utopian_point=np.zeros(A.shape[1]))
    return int(rows[int(np.argmin(np.asarray(vals).ravel()))])


# -- the run table ---------------------------------------------------------------------------------------
def full_fidelity(df: pd.DataFrame) -> pd.Series:
    """Rows whose objectives were measured at full fidelity (screened-only rows hold a cheaper estimate)."""
    if "fidelity" not in df.columns:
        return pd.Series(True, index=df.index)
    return pd.to_numeric(df["fidelity"], errors="coerce").fillna(1.0) >= 1.0


def finite(df: pd.DataFrame, names: Sequence[str]) -> pd.Series:
    """Rows where every objective in ``names`` is a finite number (NaN = not measured / failed)."""
    vals = df[list(names)].apply(pd.to_numeric, errors="coerce")
    return vals.notna().all(axis=1) & np.isfinite(vals).all(axis=1)


def eligible(df: pd.DataFrame, names: Sequence[str] = ()) -> np.ndarray:
    """Rows that may be on the front: feasible, every objective finite, measured at full fidelity."""
    ok = finite(df, names) & full_fidelity(df)
    if "feasible" in df.columns:
        ok &= df["feasible"].fillna(True).astype(bool)
    return ok.to_numpy(dtype=bool)


def front_mask(df: pd.DataFrame, names: Sequence[str], directions: Directions = None) -> np.ndarray:
    """Non-dominated rows of ``df`` among its eligible rows (positional boolean mask)."""
    mask = np.zeros(len(df), dtype=bool)
    ok = eligible(df, names)
    if ok.any():
        mask[np.flatnonzero(ok)[pareto_mask(df.loc[ok, list(names)].to_numpy(float), directions)]] = True
    return mask


def mark_pareto(df: pd.DataFrame, names: Sequence[str], directions: Directions = None) -> pd.DataFrame:
    """A copy of ``df`` with the boolean column ``pareto`` (:func:`front_mask`)."""
    df = df.copy()
    df["pareto"] = front_mask(df, names, directions) if len(df) else pd.Series(dtype=bool)
    return df


def effective_table(df: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """A copy of ``df`` whose objective columns hold what export would ship (``NAME_reformed`` where reformed).

    The unreformed values stay in ``NAME_unreformed`` (the report draws arrows from them); ``is_reformed``
    marks rows where any value was replaced.
    """
    out = df.copy()
    reformed = out["reformed"].fillna(False).astype(bool) if "reformed" in out.columns else pd.Series(False, index=out.index)
    any_ref = pd.Series(False, index=out.index)
    for n in names:
        if n not in out.columns:
            raise ConfigError(f"objective column {n!r} missing from the run table (columns: {', '.join(map(str, out.columns))})")
        out[f"{n}_unreformed"] = out[n]
        col = f"{n}_reformed"
        if col in out.columns:
            use = reformed & out[col].notna()
            out.loc[use, n] = out.loc[use, col]
            any_ref |= use
    out["is_reformed"] = any_ref
    return out


__all__ = ["pareto_mask", "reference_point", "hypervolume", "knee_points", "knee_index", "asf_index", "full_fidelity", "finite",
           "eligible", "front_mask", "mark_pareto", "effective_table"]

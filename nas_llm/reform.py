"""Reform the front of a run (``nas-llm reform runs/NAME``): reform every Pareto member of a run and record before/after.

For each row with ``pareto == True`` the subnet is resolved with the run's ranking and reformed
(:func:`nas_llm.model.reform.reform`); each objective's ``NAME_reformed`` column is filled by its traits:
``kind`` "size" and "latency" values are copied unchanged (reformation changes no shape), "quality"
objectives are rebuilt with the arguments the search gave them (``run.json["objective_args"]``) and
re-score the reformed model through ``Objective.score_model`` (perplexity: on its own windows, so the
after-number compares with the before-number). Any other objective keeps an empty column, with a
warning. The table is written atomically; the settings go to ``run.json["reform"]`` so that
:func:`nas_llm.model.reform.reform_for_run` (used by ``nas-llm export``) reproduces the same weights.

The reformation data uses the calibration source with seed + 1 by default: other windows than the
ones the perplexity is re-scored on, so the after-number is not fitted to its own test windows.
"""
from __future__ import annotations

import datetime as _dt
import math
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from nas_llm.errors import ConfigError
from objectives import Context, Objective, can_score_model, get_objective
from search_spaces import Subnet, SubnetSpace, get_family

from nas_llm.model.data import calibration_batch
from nas_llm.model.reform import (DEFAULT_DAMP, DEFAULT_ITERS, DEFAULT_RHO, METHODS, admm, bias_shift,  # noqa: F401 (re-exported)
                                 closed_form, default_calibration, reconstruction_error, reform, solve)
from nas_llm.model.slicing import slice_model
from nas_llm.run import Run
from nas_llm.select import Objectives

SHAPE_KINDS = ("size", "latency")  # values reformation cannot change: copied into NAME_reformed


def _is_true(v: Any) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0", "yes")


def run_objectives(settings: dict[str, Any]) -> Objectives | None:
    """The run's objectives with their traits (None for a run.json that lists none)."""
    return Objectives.of(settings) if settings.get("objectives") else None


def _rescorers(settings: dict[str, Any], objs: Objectives | None) -> tuple[list[str], dict[str, Objective]]:
    """(objectives copied unchanged, quality objectives that re-score a built model); warns about the rest."""
    if objs is None:
        return [], {}
    copied = [n for n in objs.names if objs.trait(n).kind in SHAPE_KINDS]
    rescored: dict[str, Objective] = {}
    args = settings.get("objective_args") or {}
    for name, path in zip(objs.names, objs.paths):
        if objs.trait(name).kind != "quality":
            continue
        try:
            obj = get_objective(path or name, **args.get(name, {}))
        except TypeError as e:
            raise ConfigError(f"objective {name!r} does not take the arguments {args.get(name)} of run.json: {e}") from None
        if can_score_model(obj):
            rescored[name] = obj
    left = [n for n in objs.names if n not in copied and n not in rescored]
    if left:
        warnings.warn(f"cannot re-score objectives {left} after reformation (only size/latency objectives carry over and "
                      f"quality objectives with score_model() are re-scored); their *_reformed columns stay empty", UserWarning)
    return copied, rescored


def check_pareto_ids(run: Run, ids: Sequence[int], df: pd.DataFrame | None = None) -> None:
    """Refuse row ids that are not Pareto members of ``run`` (reform reforms the front)."""
    df = run.table() if df is None else df
    if df.empty or "pareto" not in df.columns:
        raise ConfigError(f"{run.table_file} has no evaluations with a 'pareto' column; run the search first")
    front = set(df.loc[df["pareto"].map(_is_true), "id"].astype(int))
    bad = sorted({int(i) for i in ids} - front)
    if bad:
        raise ConfigError(f"--ids {bad}: not Pareto members of {run.path} (Pareto ids: {sorted(front)})")


def reform_run(run: Run, model: torch.nn.Module, tokenizer: Any, method: str = "admm", n_samples: int | None = None,
               seq_len: int | None = None, source: str | None = None, seed: int | None = None, rho: float = DEFAULT_RHO,
               iters: int = DEFAULT_ITERS, damp: float = DEFAULT_DAMP, batch_size: int = 8, progress: bool = True,
               command: str | None = None, ids: Sequence[int] | None = None) -> pd.DataFrame:
    """Reform the Pareto rows of ``run`` (only those in ``ids`` if given) with ``model`` (the run's dense
    model); returns the new table. Rows reformed earlier keep their values unless reformed again."""
    run.check_model(model)
    settings = run.settings()
    df = run.table()
    if df.empty or "pareto" not in df.columns:
        raise ConfigError(f"{run.table_file} has no evaluations with a 'pareto' column; run the search first")
    if ids is not None:
        check_pareto_ids(run, ids, df)
    cal = settings.get("calibration") or {}
    if not cal.get("source"):
        raise ConfigError(f"{run.settings_file} has no calibration settings (calibration.source/n_samples/seq_len/seed)")
    device = next(model.parameters()).device
    dn, dl = default_calibration(device)
    rs = {"method": method, "source": source or cal["source"], "n_samples": n_samples or dn, "seq_len": seq_len or dl,
          "seed": int(cal.get("seed", 0)) + 1 if seed is None else seed, "rho": rho, "iters": iters, "damp": damp,
          "batch_size": batch_size}
    if re.search(r"(^|[-_.:])test([-_.:]|$)", Path(str(rs["source"])).name.lower()):
        warnings.warn(f"reformation calibration source {rs['source']!r} looks like a test split; calibrate on validation data", UserWarning)
    ranking = run.ranking()
    calib = calibration_batch(tokenizer, rs["source"], rs["n_samples"], rs["seq_len"], rs["seed"])
    objs = run_objectives(settings)
    objectives = objs.names if objs is not None else []
    copied, rescored = _rescorers(settings, objs)
    space = SubnetSpace.from_model(model, int(settings.get("granularity") or 1), bool(settings.get("allow_layer_drop", True)))
    ctx = Context(model, tokenizer, space, ranking, device=str(device), progress=progress)
    pareto = df["pareto"].map(_is_true)
    if ids is not None:
        pareto &= df["id"].astype(int).isin({int(i) for i in ids})
    rows = df.index[pareto].tolist()
    if method == "flexi":  # rows that drop no layer (the dense model, width-only cuts) have nothing to replace
        from nas_llm.model.flexi import not_applicable

        skip = [i for i in rows if not_applicable(ranking.resolve(Subnet.from_json(df.at[i, "subnet"])), space.dims)]
        if skip:
            print(f"flexi: {len(skip)} Pareto rows left unreformed (they drop no layer or keep no full-width block): ids "
                  f"{', '.join(str(int(df.at[i, 'id'])) for i in skip)}", file=sys.stderr)
        rows = [i for i in rows if i not in skip]
    for col, empty in [*((f"{n}_reformed", float("nan")) for n in objectives), ("reformed", False), ("reform_time_s", float("nan"))]:
        if col not in df.columns:
            df[col] = empty
    df["reformed"] = df["reformed"].map(_is_true)
    prev = settings.get("reform")
    if prev and any(prev.get(k) != v for k, v in rs.items()) and (df["reformed"] & ~pareto).any():
        raise ConfigError(f"{run.path} was reformed with other settings ({prev['method']}, {prev['n_samples']} x "
                         f"{prev['seq_len']}); reform all rows again (no --ids) or with the same settings")
    t_all = time.perf_counter()
    for idx in tqdm(rows, desc=f"reform {run.path.name}", disable=not progress):
        subnet = Subnet.from_json(df.at[idx, "subnet"])
        t0 = time.perf_counter()
        model_r = reform(model, ranking.resolve(subnet), calib.to(device), method, rho=rho, iters=iters, damp=damp,
                         batch_size=batch_size, subnet=subnet, progress=progress)
        df.at[idx, "reform_time_s"] = time.perf_counter() - t0
        for n in copied:
            if n in df.columns:
                df.at[idx, f"{n}_reformed"] = df.at[idx, n]
        for n, obj in rescored.items():
            v = float(obj.score_model(model_r, ctx))
            df.at[idx, f"{n}_reformed"] = v if math.isfinite(v) else float("inf")
        df.at[idx, "reformed"] = True
        del model_r
    run.write_table(df)
    settings["reform"] = {**rs, "rescored_on": cal, "rows": int(df["reformed"].sum()), "time_s": round(time.perf_counter() - t_all, 2),
                          "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                          "command": command or "nas-llm reform " + " ".join(sys.argv[2:])}
    run.write_settings(settings)
    return df


def reform_for_run(run_dir: str | Path, subnet: Any, model: torch.nn.Module, tokenizer: Any, progress: bool = True) -> torch.nn.Module:
    """Reproduce a run's reformation of ``subnet`` (deterministic: same ranking, data, seed, settings).

    Raises ``ValueError`` if the run was never reformed (``nas-llm reform RUN`` stores the settings).
    """
    run = Run(run_dir)
    s = run.settings().get("reform")
    if not s:
        raise ConfigError(f"{run.path} has no reformation settings in run.json; run `nas-llm reform {run.path}` first")
    plan = run.ranking().resolve(subnet)
    device = next(model.parameters()).device
    if s["method"] == "none":
        return slice_model(model, plan, subnet=subnet)
    if s["method"] == "flexi":
        from nas_llm.model.flexi import not_applicable

        if not_applicable(plan, get_family(model).dims(model)):  # left unreformed by reform_run: its numbers are the sliced model's
            return slice_model(model, plan, subnet=subnet)
    ids = calibration_batch(tokenizer, s["source"], s["n_samples"], s["seq_len"], s["seed"]).to(device)
    return reform(model, plan, ids, s["method"], rho=s.get("rho", DEFAULT_RHO), iters=s.get("iters", DEFAULT_ITERS),
                  damp=s.get("damp", DEFAULT_DAMP), batch_size=s.get("batch_size", 8), subnet=subnet, progress=progress)


__all__ = ["METHODS", "reform", "reform_run", "reform_for_run", "run_objectives", "default_calibration", "admm", "closed_form", "bias_shift",
           "reconstruction_error", "solve"]

"""``nas-llm reform runs/NAME``: reform every Pareto member of a run and record before/after.

For each row with ``pareto == True`` the subnet is resolved with the run's ranking, reformed
(:func:`nas_llm.reform.reform`) and its perplexity re-scored on the run's own calibration settings
(``run.json["calibration"]``). Objectives that depend only on shapes (latency, params, bytes...) are
copied unchanged into their ``NAME_reformed`` column, since reformation changes no shape. The table
is written atomically; the settings go to ``run.json["reform"]`` so that
:func:`nas_llm.reform.reform_for_run` (used by ``nas-llm export``) reproduces the same weights.

The reformation data uses the calibration source with seed + 1 by default: other windows than the
ones the perplexity is re-scored on, so the after-number is not fitted to its own test windows.
"""
from __future__ import annotations

import argparse
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

from search_spaces import Subnet

from .reform import DEFAULT_DAMP, DEFAULT_ITERS, DEFAULT_RHO, METHODS, default_calibration, reform
from .run import Run

QUALITY = ("perplex", "ppl")  # objectives re-scored after reformation (substring of the name)
SHAPE_ONLY = ("latency", "params", "weight_bytes", "kv_cache", "memory", "flops", "macs", "throughput", "size")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (runs/NAME) written by `nas-llm search`")
    p.add_argument("--method", choices=[m for m in METHODS if m != "none"], default="admm",
                   help="admm (the paper), exact (closed-form least squares) or bias (FLAP bias compensation); default admm")
    p.add_argument("--n-samples", type=int, default=None, help="calibration windows for reformation (default: 64 on CPU, 128 on GPU)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per window (default: 256 on CPU, 2048 on GPU)")
    p.add_argument("--source", default=None, help="calibration text (default: the run's calibration source; never the test split)")
    p.add_argument("--seed", type=int, default=None, help="calibration seed (default: the run's calibration seed + 1)")
    p.add_argument("--rho", type=float, default=DEFAULT_RHO, help=f"ADMM penalty on the scaled problem (default {DEFAULT_RHO})")
    p.add_argument("--iters", type=int, default=DEFAULT_ITERS, help=f"ADMM iterations (default {DEFAULT_ITERS})")
    p.add_argument("--damp", type=float, default=DEFAULT_DAMP, help=f"relative diagonal damping of X X^T (default {DEFAULT_DAMP})")
    p.add_argument("--batch-size", type=int, default=8, help="calibration windows per forward (default 8)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--ids", default=None, help="reform only these Pareto rows: comma-separated ids and/or 'knee' "
                   "(default: every Pareto member; ~2 min each on a 2-core CPU for SmolLM2). Export reforms any row it ships")


def _is_true(v: Any) -> bool:
    return str(v).strip().lower() in ("true", "1", "1.0", "yes")


def _kind(name: str) -> str:
    low = name.lower()
    if "@" not in low and any(q in low for q in QUALITY):  # the same test as nas_llm.select
        return "quality"
    if any(low.startswith(s) for s in SHAPE_ONLY):
        return "shape"
    return "unknown"


def reform_run(run: Run, model: torch.nn.Module, tokenizer: Any, method: str = "admm", n_samples: int | None = None,
               seq_len: int | None = None, source: str | None = None, seed: int | None = None, rho: float = DEFAULT_RHO,
               iters: int = DEFAULT_ITERS, damp: float = DEFAULT_DAMP, batch_size: int = 8, progress: bool = True,
               command: str | None = None, ids: Sequence[int] | None = None) -> pd.DataFrame:
    """Reform the Pareto rows of ``run`` (only those in ``ids`` if given) with ``model`` (the run's dense
    model); returns the new table. Rows reformed earlier keep their values unless reformed again."""
    from .data import calibration_batch
    from .metrics import perplexity

    settings = run.settings()
    df = run.table()
    if df.empty or "pareto" not in df.columns:
        raise ValueError(f"{run.table_file} has no evaluations with a 'pareto' column; run the search first")
    cal = settings.get("calibration") or {}
    if not cal.get("source"):
        raise ValueError(f"{run.settings_file} has no calibration settings (calibration.source/n_samples/seq_len/seed)")
    device = next(model.parameters()).device
    dn, dl = default_calibration(device)
    rs = {"method": method, "source": source or cal["source"], "n_samples": n_samples or dn, "seq_len": seq_len or dl,
          "seed": int(cal.get("seed", 0)) + 1 if seed is None else seed, "rho": rho, "iters": iters, "damp": damp,
          "batch_size": batch_size}
    if re.search(r"(^|[-_.:])test([-_.:]|$)", Path(str(rs["source"])).name.lower()):
        warnings.warn(f"reformation calibration source {rs['source']!r} looks like a test split; calibrate on validation data", UserWarning)
    ranking = run.ranking()
    calib = calibration_batch(tokenizer, rs["source"], rs["n_samples"], rs["seq_len"], rs["seed"])
    score_ids = calibration_batch(tokenizer, cal["source"], int(cal.get("n_samples", 32)), int(cal.get("seq_len", 256)), int(cal.get("seed", 0)))
    objectives = [o["name"] if isinstance(o, dict) else str(o) for o in settings.get("objectives", [])]
    unknown = [n for n in objectives if _kind(n) == "unknown"]
    if unknown:
        warnings.warn(f"cannot re-score objectives {unknown} after reformation; their *_reformed columns stay empty", UserWarning)
    pareto = df["pareto"].map(_is_true)
    if ids is not None:
        wanted = {int(i) for i in ids}
        bad = sorted(wanted - set(df.loc[pareto, "id"].astype(int)))
        if bad:
            raise ValueError(f"--ids {bad}: not Pareto members of {run.path} (Pareto ids: "
                             f"{sorted(df.loc[pareto, 'id'].astype(int).tolist())})")
        pareto &= df["id"].astype(int).isin(wanted)
    rows = df.index[pareto].tolist()
    for col, empty in [*((f"{n}_reformed", float("nan")) for n in objectives), ("reformed", False), ("reform_time_s", float("nan"))]:
        if col not in df.columns:
            df[col] = empty
    df["reformed"] = df["reformed"].map(_is_true)
    prev = settings.get("reform")
    if prev and any(prev.get(k) != v for k, v in rs.items()) and (df["reformed"] & ~pareto).any():
        raise ValueError(f"{run.path} was reformed with other settings ({prev['method']}, {prev['n_samples']} x "
                         f"{prev['seq_len']}); reform all rows again (no --ids) or with the same settings")
    t_all = time.perf_counter()
    for idx in tqdm(rows, desc=f"reform {run.path.name}", disable=not progress):
        subnet = Subnet.from_json(df.at[idx, "subnet"])
        t0 = time.perf_counter()
        model_r = reform(model, ranking.resolve(subnet), calib.to(device), method, rho=rho, iters=iters, damp=damp,
                         batch_size=batch_size, subnet=subnet, progress=progress)
        df.at[idx, "reform_time_s"] = time.perf_counter() - t0
        ppl = None
        for n in objectives:
            if _kind(n) == "quality":
                ppl = perplexity(model_r, score_ids.to(device), batch_size=batch_size) if ppl is None else ppl
                df.at[idx, f"{n}_reformed"] = ppl if math.isfinite(ppl) else float("inf")
            elif _kind(n) == "shape" and n in df.columns:
                df.at[idx, f"{n}_reformed"] = df.at[idx, n]
        df.at[idx, "reformed"] = True
        del model_r
    run.write_table(df)
    settings["reform"] = {**rs, "rescored_on": cal, "rows": int(df["reformed"].sum()), "time_s": round(time.perf_counter() - t_all, 2),
                          "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                          "command": command or "nas-llm reform " + " ".join(sys.argv[2:])}
    run.write_settings(settings)
    return df


def main(args: argparse.Namespace) -> int:
    from .loading import load_model

    run = Run(args.run).require()
    settings = run.settings()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if not settings.get("model"):
        raise ValueError(f"{run.settings_file} does not name its model")
    ids = None  # parsed before the model load, so a bad --ids fails at once
    if args.ids:
        ids = []
        for part in (x.strip() for x in args.ids.split(",") if x.strip()):
            if part == "knee":
                from .select import pick

                ids.append(pick(run.path, "knee").id)
            elif part.isdigit():
                ids.append(int(part))
            else:
                raise ValueError(f"--ids: {part!r} is neither a row id nor 'knee'")
    model, tok = load_model(settings["model"], device=device)
    df = reform_run(run, model, tok, args.method, args.n_samples, args.seq_len, args.source, args.seed, args.rho, args.iters,
                    args.damp, args.batch_size, command="nas-llm reform " + " ".join(sys.argv[2:]), ids=ids)
    done = df[df["reformed"]]
    names = [c[: -len("_reformed")] for c in df.columns if c.endswith("_reformed") and c[: -len("_reformed")] in df.columns]
    print(f"reformed {len(done)} Pareto members of {run.path} with {args.method}")
    for _, r in done.iterrows():
        parts = [f"{n} {r[n]:.4g} -> {r[n + '_reformed']:.4g}" for n in names if _kind(n) == "quality"]
        print(f"  id {r['id']}: " + ", ".join(parts) + f" ({r['reform_time_s']:.1f} s)")
    return 0

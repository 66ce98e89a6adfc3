"""What the report shows, computed without plotly (as Optuna builds ``_ParetoFrontInfo`` before drawing).

:class:`RunData` is a run's effective table (reformed values where reformed, see :mod:`nas_llm.front`)
with its front mask, knee and axes; :func:`front_info`, :func:`layer_bars`, :func:`hypervolume_history`
and :func:`parallel_dims` turn it into plain numbers and strings that :mod:`nas_llm.report.figures` draws.
Axes and texts come from the objectives' traits: the y axis is the first quality objective, the x axis
the first latency objective, and a predicted latency is labelled "predicted", never "measured".
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nas_llm.front import finite, full_fidelity, hypervolume, reference_point
from nas_llm.run import EXPORTS_FILE, Run
from nas_llm.select import by_knee, front_mask, label, load, runtime_text
from search_spaces import Subnet

POINTS_META = "subnets"  # every trace whose meta is this holds evaluated subnets, one point each
BASELINE_PREFIXES = ("baseline", "uniform", "dense")
SYMBOLS = ("diamond", "square", "triangle-up", "pentagon", "triangle-down", "hexagon", "cross", "star-triangle-up")


class RunData:
    """The effective table of a run plus what every figure needs (front mask, knee, axes, layer widths)."""

    def __init__(self, run: Run | str | Path):
        self.run, self.df, self.obj = load(run)
        self.df = self.df.reset_index(drop=True)
        self.settings = self.run.settings()
        self.plotted = finite(self.df, self.obj.names)
        self.front = front_mask(self.df, self.obj)
        self.df["on_front"] = self.front
        try:
            self.knee_id: int | None = by_knee(self.df, self.obj).id
        except ValueError:
            self.knee_id = None
        self.x, self.y = self._axes()
        self.max_kv, self.max_neurons = self._widths()
        self.q_per_group = self._q_per_group()

    def _axes(self) -> tuple[str, str]:
        """x = the first latency objective (or the 2nd objective), y = the first quality objective (or the 1st)."""
        names = self.obj.names
        y = self.obj.ppl or names[0]
        x = self.obj.latency or next((n for n in names if n != y), "params_ratio")
        return x, y

    def _widths(self) -> tuple[list[int], list[int]]:
        """Per-layer dense KV groups and MLP neurons: from the ranking, else the widest row of the table."""
        try:
            r = self.run.ranking()
            return [len(o) for o in r.kv_order], [len(o) for o in r.neuron_order]
        except (FileNotFoundError, KeyError, ValueError):
            subs = [Subnet.from_json(s) for s in self.df["subnet"]]
            L = subs[0].num_layers
            return ([max(s.layers[i].kv_groups for s in subs) for i in range(L)],
                    [max(s.layers[i].neurons for s in subs) for i in range(L)])

    def _q_per_group(self) -> int | None:
        """Query heads per KV group of the dense model (run.json's space, else the ranking); None if unknown."""
        hpg = (self.settings.get("space") or {}).get("heads_per_group")
        if hpg:
            return int(hpg[-1])
        try:
            q = self.run.ranking().q_order
            return None if q is None else int(q[0].shape[1])
        except (FileNotFoundError, KeyError, ValueError):
            return None

    def label(self, col: str) -> str:
        """``col`` as an axis or table reads it: unit, and measured or predicted for a latency."""
        return label(col, self.obj, say_measured=True)

    @property
    def log_y(self) -> bool:
        """Whether the y objective is compared on a log scale (its ``log_scale`` trait)."""
        return self.obj.trait(self.y).log_scale

    @property
    def granularity(self) -> int:
        return int(self.settings.get("granularity") or 64)

    def row(self, rid: int) -> pd.Series:
        return self.df[self.df["id"] == rid].iloc[0]

    def evals(self) -> dict[int, dict[str, Any]]:
        """``{row id: eval.json}`` for exports of this run that were evaluated."""
        f = self.run.path / EXPORTS_FILE
        out: dict[int, dict[str, Any]] = {}
        if not f.is_file():
            return out
        try:
            entries = json.loads(f.read_text())
        except json.JSONDecodeError:
            return out
        for e in entries:
            ev = Path(e.get("out", "")) / "eval.json"
            if ev.is_file():
                try:
                    out[int(e["id"])] = {**json.loads(ev.read_text()), "folder": e["out"]}
                except (json.JSONDecodeError, KeyError, ValueError):
                    continue
        return out


candidates_all = finite  # rows that can be drawn: every objective a finite number (the old name)


def family(source: str) -> str:
    """``baseline:flap@0.7`` -> ``flap``; ``uniform`` -> ``uniform``; ``dense`` -> ``dense``."""
    s = str(source)
    if s.startswith("baseline:"):
        s = s[len("baseline:"):]
    return s.split("@")[0].split("-r")[0] or "baseline"


def is_baseline(source: Any) -> bool:
    return str(source).startswith(BASELINE_PREFIXES)


def layers_text(subnet_json: str) -> str:
    s = Subnet.from_json(subnet_json)
    cells = [c.label() for c in s.layers]
    return "<br>".join(" ".join(cells[i:i + 10]) for i in range(0, len(cells), 10))


def hover_texts(d: RunData, rows: pd.DataFrame) -> list[str]:
    out = []
    for _, r in rows.iterrows():
        vals = "<br>".join(f"{n}: {float(r[n]):.4g}" + (f" (unreformed {float(r[n + '_unreformed']):.4g})" if r.get("is_reformed") else "")
                           for n in d.obj.names)
        extra = f"<br>violation: {r['violation']}" if "violation" in d.df.columns else ""
        out.append(f"<b>id {int(r['id'])}</b> ({html.escape(str(r.get('source', '')))}){' reformed' if r.get('is_reformed') else ''}<br>"
                   f"{Subnet.from_json(r['subnet']).summary()}<br>params ratio {float(r['params_ratio']):.3f}<br>{vals}{extra}"
                   f"<br>layers (kv/neurons, x = dropped):<br>{layers_text(r['subnet'])}")
    return out


# -- the front picture -----------------------------------------------------------------------------------
@dataclass
class PointGroup:
    """One legend entry of the front picture: a named set of rows and how its markers look."""

    name: str
    rows: pd.DataFrame
    marker: dict[str, Any]


@dataclass
class FrontInfo:
    """Everything the front picture draws, as plain data."""

    x: str
    y: str
    x_title: str
    y_title: str
    log_y: bool
    title: str
    groups: list[PointGroup]
    front_line: tuple[list[float], list[float]]
    reformed: pd.DataFrame  # drawable reformed rows: arrows from NAME_unreformed to NAME
    knee: tuple[int, float, float] | None
    y_range: tuple[float, float] | None = None  # the initial (clipped) log10 y range, None = autoscale
    notes: list[str] = field(default_factory=list)


def point_groups(d: RunData) -> list[PointGroup]:
    """Front, dominated, screened-only and infeasible points, then one group per baseline family."""
    df, drawable = d.df, d.plotted
    feasible = df["feasible"].fillna(True).astype(bool) if "feasible" in df.columns else pd.Series(True, index=df.index)
    base = df["source"].map(is_baseline) if "source" in df.columns else pd.Series(False, index=df.index)
    full = full_fidelity(df)
    masks = [
        ("Pareto front", drawable & d.front & ~base, dict(size=10, opacity=1.0, line=dict(width=1, color="black"))),
        ("dominated", drawable & ~d.front & feasible & full & ~base, dict(size=7, opacity=0.3)),
        ("screened only (cheap low-fidelity values)", drawable & feasible & ~full & ~base, dict(size=6, opacity=0.3, symbol="circle-open")),
        ("infeasible (violates a constraint)", drawable & ~feasible & ~base, dict(size=7, opacity=0.3, symbol="x")),
    ]
    base_shown = drawable & base & full  # a baseline left at a screening value would be drawn as if final
    fams = df.loc[base_shown, "source"].astype(str).map(family) if "source" in df.columns else pd.Series(dtype=str)
    symbols = iter(SYMBOLS)
    for fam in sorted(set(fams), key=lambda f: (f != "dense", f != "uniform", f)):
        fam_mask = base_shown & (df["source"].astype(str).map(family) == fam)
        sym = "star" if fam == "dense" else next(symbols, "diamond")
        masks.append((f"baseline: {fam}" if fam != "dense" else "dense model", fam_mask,
                      dict(size=14 if fam == "dense" else 11, opacity=1.0, symbol=sym, line=dict(width=1.5, color="black"))))
    return [PointGroup(name, df[mask], marker) for name, mask, marker in masks if mask.any()]


def front_info(d: RunData, log_y: bool | None = None) -> FrontInfo:
    """The front picture of ``d``; ``log_y`` defaults to the y objective's ``log_scale`` trait."""
    log_y = d.log_y if log_y is None else log_y
    df, x, y, drawable = d.df, d.x, d.y, d.plotted
    fr = df[drawable & d.front].sort_values(x)
    ref = df[drawable & df["is_reformed"].astype(bool)] if "is_reformed" in df.columns else df.iloc[:0]
    knee = None
    if d.knee_id is not None:
        k = d.row(d.knee_id)
        knee = (d.knee_id, float(k[x]), float(k[y]))
    info = FrontInfo(x, y, d.label(x) + "  (lower is better)",
                     d.label(y) + ("  (log scale, lower is better)" if log_y else "  (lower is better)"), log_y,
                     _front_title(d), point_groups(d), (fr[x].astype(float).tolist(), fr[y].astype(float).tolist()), ref, knee)
    # values of broken subnets reach 1e10 on a log axis; clip the initial view so the usable region is not squashed
    ys = df.loc[drawable, y].astype(float)
    y_lo, y_hi = (float(ys.min()), float(ys.max())) if len(ys) else (1.0, 1.0)
    if log_y and y_lo > 0 and y_hi > 1000 * y_lo:
        info.y_range = (float(np.log10(y_lo / 1.3)), float(np.log10(1000 * y_lo)))
        info.notes.append(f"{d.label(y)} axis clipped at 1000x the best; the autoscale button shows all points")
    return info


def _front_title(d: RunData) -> str:
    drawable = d.plotted
    base = d.df["source"].map(is_baseline) if "source" in d.df.columns else pd.Series(False, index=d.df.index)
    n_base_front = int((drawable & d.front & base).sum())
    return (f"{d.label(d.y)} vs {d.label(d.x)}: {int(drawable.sum())} evaluated subnets, {int((drawable & d.front).sum())} on the front"
            + (f" ({n_base_front} of them {'a baseline' if n_base_front == 1 else 'baselines'})" if n_base_front else ""))


# -- per-layer structure -----------------------------------------------------------------------------------
@dataclass
class LayerBars:
    """Kept fraction of KV groups and neuron blocks per layer of one row, with hover texts."""

    kv: list[float]
    neurons: list[float]
    kv_text: list[str]
    neuron_text: list[str]
    dropped: list[int]


def layer_bars(d: RunData, rid: int) -> LayerBars:
    s = Subnet.from_json(d.row(rid)["subnet"])
    g = d.granularity
    qpg = d.q_per_group

    def attn(i: int, c) -> float:  # kept share of the query heads (of the KV groups without a query-head cut)
        if c.heads_per_group is None or not qpg:
            return c.kv_groups / max(d.max_kv[i], 1)
        return c.kv_groups * c.heads_per_group / max(d.max_kv[i] * qpg, 1)

    def attn_text(i: int, c) -> str:
        q = "" if c.heads_per_group is None or not qpg else f" x {c.heads_per_group}/{qpg} query heads"
        return f"layer {i}: {c.kv_groups}/{d.max_kv[i]} KV groups{q}"

    kv = [attn(i, c) if c.keep else 0.0 for i, c in enumerate(s.layers)]
    nb = [c.neurons / max(d.max_neurons[i], 1) if c.keep else 0.0 for i, c in enumerate(s.layers)]
    kv_t = [attn_text(i, c) if c.keep else f"layer {i}: dropped" for i, c in enumerate(s.layers)]
    nb_t = [f"layer {i}: {c.neurons // g}/{d.max_neurons[i] // g} neuron blocks ({c.neurons}/{d.max_neurons[i]} neurons)"
            if c.keep else f"layer {i}: dropped" for i, c in enumerate(s.layers)]
    return LayerBars(kv, nb, kv_t, nb_t, [i for i, c in enumerate(s.layers) if not c.keep])


def default_pick(d: RunData, front_ids: list[int], knee: int) -> int:
    """The fastest front member within 2x the best quality value (a usable model, unlike the front's fast end)."""
    fr = d.df[d.df["id"].isin(front_ids)].sort_values(d.x)
    good = fr[fr[d.y] <= 2.0 * float(fr[d.y].min())]
    ids = [int(i) for i in good["id"] if int(i) != knee] or [int(i) for i in fr["id"] if int(i) != knee] or [knee]
    return ids[0]


def point_title(d: RunData, rid: int, what: str) -> str:
    r = d.row(rid)
    return (f"{what}: id {rid} ({r.get('source', '')}) - {d.label(d.y)} {float(r[d.y]):.4g}, {d.label(d.x)} {float(r[d.x]):.4g}, "
            f"params ratio {float(r['params_ratio']):.3f}")


# -- search progress and all objectives -------------------------------------------------------------------------
def hypervolume_history(d: RunData) -> pd.DataFrame:
    """``hypervolume.csv`` when the search wrote it, else recomputed from the table in id order."""
    f = d.run.path / "hypervolume.csv"
    if f.is_file():
        h = pd.read_csv(f)
        if not h.empty and {"evaluations", "hypervolume"} <= set(h.columns):
            return h
    rows = d.df[d.plotted].sort_values("id")
    F = rows[d.obj.names].to_numpy(float)
    if len(F) == 0:
        return pd.DataFrame(columns=["evaluations", "hypervolume"])
    fj = d.run.path / "front.json"
    ref = json.loads(fj.read_text()).get("reference_point") if fj.is_file() else None
    ref = np.asarray(ref, float) if ref is not None else reference_point(F, d.obj.directions)
    steps = sorted(set(np.linspace(1, len(F), min(len(F), 60)).astype(int)))
    return pd.DataFrame({"evaluations": steps, "hypervolume": [hypervolume(F[:k], ref, d.obj.directions) for k in steps]})


def parallel_dims(d: RunData) -> list[dict[str, Any]]:
    """Parallel-coordinate axes: on front, every objective (+ params ratio); a ``log_scale`` objective that
    spans decades is shown as log10 (a linear axis shows one blob)."""
    rows = d.df[d.plotted]
    dims = [dict(label="on front", values=rows["on_front"].astype(int).tolist(), tickvals=[0, 1], ticktext=["no", "yes"])]
    for c in dict.fromkeys([*d.obj.names, "params_ratio"]):
        v = rows[c].astype(float)
        if d.obj.trait(c).log_scale and len(v) and (v > 0).all() and v.max() > 100 * v.min():
            dims.append(dict(label=f"log10 {d.label(c)}", values=np.log10(v).tolist()))
        else:
            dims.append(dict(label=d.label(c), values=v.tolist()))
    return dims


# -- texts of the page ---------------------------------------------------------------------------------------
def x_axis_text(d: RunData) -> str:
    """How the x values were obtained, from the x objective's traits."""
    t = d.obj.trait(d.x)
    if t.kind != "latency":
        return f"the x axis is {d.x}, not a latency"
    runtime = runtime_text(d.obj.details.get(d.x))
    where = f" in {runtime}" if runtime else ""
    if t.measured:
        return f"{d.x} is measured{where} on the search machine"
    return f"{d.x} is predicted{where} (an estimate from the {d.x} objective's model of the hardware), not measured"


def quality_text(d: RunData) -> str:
    """Where the y objective was measured (its recorded arguments), '' when run.json does not say."""
    a = (d.settings.get("objective_args") or {}).get(d.y) or {}
    if not a.get("source"):
        return ""
    txt = f"{a.get('source', '?')}, {a.get('n_samples', '?')} x {a.get('seq_len', '?')} tokens"
    if d.settings.get("screen_fidelity"):
        txt += f" (screening at fidelity {d.settings['screen_fidelity']}: a fraction of those samples)"
    return txt


def dense_text(d: RunData) -> str:
    """'For reference, the dense model: ...' when the run evaluated it (the yardstick for every other number)."""
    dense = d.df[(d.df["source"].astype(str) == "dense") & d.plotted] if "source" in d.df.columns else d.df.iloc[:0]
    if dense.empty:
        return ""
    r = dense.iloc[0]
    return f"For reference, the dense model (id {int(r['id'])}): {d.label(d.y)} {float(r[d.y]):.4g}, {d.label(d.x)} {float(r[d.x]):.4g}. "


def run_info(d: RunData) -> dict[str, str]:
    """The key/value summary at the top of the page."""
    s = d.settings
    n_all, n_draw = len(d.df), int(d.plotted.sum())
    skipped = n_all - n_draw
    cal = s.get("calibration") or {}
    q = quality_text(d)
    return {
        "model": s.get("model", "?"),
        "objectives": ", ".join(f"{d.label(n)} ({dr})" for n, dr in zip(d.obj.names, d.obj.directions)),
        "constraints": ", ".join(map(str, s.get("constraints") or [])) or "none",
        "search": f"{s.get('driver', '?')}, seed {s.get('seed', '?')}, granularity {d.granularity}, importance {s.get('importance', '?')}",
        "importance calibration": f"{cal.get('source', '?')}, {cal.get('n_samples', '?')} x {cal.get('seq_len', '?')} tokens" if cal else "?",
        **({f"{d.y} measured on": q} if q else {}),
        "evaluations": f"{n_all} ({int((d.front & d.plotted).sum())} on the front" + (f"; {skipped} without all values not drawn" if skipped else "") + ")",
        "reformation": json.dumps(s["reform"]) if s.get("reform") else "not reformed",
        "command": s.get("command", ""),
    }


__all__ = ["POINTS_META", "FrontInfo", "LayerBars", "PointGroup", "RunData", "candidates_all", "default_pick", "dense_text",
           "family", "front_info", "hover_texts", "hypervolume_history", "is_baseline", "layer_bars", "layers_text",
           "parallel_dims", "point_groups", "point_title", "quality_text", "run_info", "x_axis_text"]

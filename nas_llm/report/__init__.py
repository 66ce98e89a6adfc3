"""``nas-llm report runs/NAME``: one self-contained HTML page to explore a run (plotly.js embedded, works offline).

The figure builders (:func:`front_figure`, :func:`layers_figure`, :func:`hypervolume_figure`,
:func:`parallel_figure`) return plain ``plotly.graph_objects.Figure`` objects, so a notebook shows the same
pictures as the page. Values are the ones an export would ship (reformed where reformed), see
:mod:`nas_llm.select`; the knee is ``select``'s knee, so ``report``, ``select`` and ``export --pick knee`` agree.
"""
from __future__ import annotations

import argparse
import html
import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


from nas_llm.model.atomic import atomic_write_text
from nas_llm.run import EXPORTS_FILE, Run
from nas_llm.select import Objectives, by_knee, front_mask, full_fidelity, label, load, runtime_text

POINTS_META = "subnets"  # every trace whose meta is this holds evaluated subnets, one point each
BASELINE_PREFIXES = ("baseline", "uniform", "dense")


# -- data ----------------------------------------------------------------------------------------------
class RunData:
    """The effective table of a run plus what every figure needs (front mask, knee, layer widths)."""

    def __init__(self, run: Run | str | Path):
        self.run, self.df, self.obj = load(run)
        self.df = self.df.reset_index(drop=True)
        self.settings = self.run.settings()
        self.plotted = candidates_all(self.df, self.obj)
        self.front = front_mask(self.df, self.obj)
        self.df["on_front"] = self.front
        try:
            self.knee_id: int | None = by_knee(self.df, self.obj).id
        except ValueError:
            self.knee_id = None
        self.x, self.y = self._axes()
        self.max_kv, self.max_neurons = self._widths()

    def _axes(self) -> tuple[str, str]:
        """x = latency (or the 2nd objective), y = perplexity (or the 1st)."""
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
            from search_spaces import Subnet

            subs = [Subnet.from_json(s) for s in self.df["subnet"]]
            L = subs[0].num_layers
            return ([max(s.layers[i].kv_groups for s in subs) for i in range(L)],
                    [max(s.layers[i].neurons for s in subs) for i in range(L)])

    @property
    def granularity(self) -> int:
        return int(self.settings.get("granularity") or 64)

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


def candidates_all(df: pd.DataFrame, obj: Objectives) -> pd.Series:
    """Rows that can be drawn: every objective is a finite number."""
    vals = df[obj.names].apply(pd.to_numeric, errors="coerce")
    return vals.notna().all(axis=1) & np.isfinite(vals).all(axis=1)


def _family(source: str) -> str:
    """``baseline:flap@0.7`` -> ``flap``; ``uniform`` -> ``uniform``; ``dense`` -> ``dense``."""
    s = str(source)
    if s.startswith("baseline:"):
        s = s[len("baseline:"):]
    return s.split("@")[0].split("-r")[0] or "baseline"


def _is_baseline(source: Any) -> bool:
    return str(source).startswith(BASELINE_PREFIXES)


def _layers_text(subnet_json: str) -> str:
    from search_spaces import Subnet

    s = Subnet.from_json(subnet_json)
    cells = [f"{c.kv_groups}/{c.neurons}" if c.keep else "x" for c in s.layers]
    return "<br>".join(" ".join(cells[i:i + 10]) for i in range(0, len(cells), 10))


def _hover(d: RunData, rows: pd.DataFrame) -> list[str]:
    from search_spaces import Subnet

    out = []
    for _, r in rows.iterrows():
        vals = "<br>".join(f"{n}: {float(r[n]):.4g}" + (f" (unreformed {float(r[n + '_unreformed']):.4g})" if r.get("is_reformed") else "")
                           for n in d.obj.names)
        extra = [c for c in d.df.columns if c.endswith("_reformed") is False and c not in d.obj.names and c in ("violation",)]
        out.append(f"<b>id {int(r['id'])}</b> ({html.escape(str(r.get('source', '')))}){' reformed' if r.get('is_reformed') else ''}<br>"
                   f"{Subnet.from_json(r['subnet']).summary()}<br>params ratio {float(r['params_ratio']):.3f}<br>{vals}"
                   + "".join(f"<br>{c}: {r[c]}" for c in extra)
                   + f"<br>layers (kv/neurons, x = dropped):<br>{_layers_text(r['subnet'])}")
    return out


# -- figures ---------------------------------------------------------------------------------------------
def front_figure(run: Run | str | Path | RunData, log_y: bool = True):
    """Perplexity vs latency, one point per evaluated subnet; dominated points faded (legend/button toggles them)."""
    import plotly.graph_objects as go

    d = run if isinstance(run, RunData) else RunData(run)
    df, x, y = d.df, d.x, d.y
    drawable = d.plotted
    feasible = df["feasible"].fillna(True).astype(bool) if "feasible" in df.columns else pd.Series(True, index=df.index)
    base = df["source"].map(_is_baseline) if "source" in df.columns else pd.Series(False, index=df.index)
    full = full_fidelity(df)
    groups = [
        ("Pareto front", drawable & d.front & ~base, dict(size=10, opacity=1.0, line=dict(width=1, color="black"))),
        ("dominated", drawable & ~d.front & feasible & full & ~base, dict(size=7, opacity=0.3)),
        ("screened only (cheap low-fidelity perplexity)", drawable & feasible & ~full & ~base, dict(size=6, opacity=0.3, symbol="circle-open")),
        ("infeasible (violates a constraint)", drawable & ~feasible & ~base, dict(size=7, opacity=0.3, symbol="x")),
    ]
    # one trace per baseline family (dense, uniform, baseline:NAME), each with its own symbol and legend entry
    symbols = iter(["diamond", "square", "triangle-up", "pentagon", "triangle-down", "hexagon", "cross", "star-triangle-up"])
    for fam in sorted(set(df.loc[drawable & base, "source"].astype(str).map(_family)), key=lambda f: (f != "dense", f != "uniform", f)):
        fam_mask = drawable & base & (df["source"].astype(str).map(_family) == fam)
        sym = "star" if fam == "dense" else next(symbols, "diamond")
        groups.append((f"baseline: {fam}" if fam != "dense" else "dense model", fam_mask,
                       dict(size=14 if fam == "dense" else 11, opacity=1.0, symbol=sym, line=dict(width=1.5, color="black"))))
    cmin, cmax = float(df.loc[drawable, "params_ratio"].min()), float(df.loc[drawable, "params_ratio"].max())
    cmax = cmax if cmax > cmin else cmin + 1e-6
    fig = go.Figure()
    for name, mask, marker in groups:
        rows = df[mask]
        if rows.empty:
            continue
        fig.add_trace(go.Scatter(
            x=rows[x].astype(float).tolist(), y=rows[y].astype(float).tolist(), mode="markers", name=f"{name} ({len(rows)})",
            meta=POINTS_META, customdata=rows["id"].astype(int).tolist(),
            text=_hover(d, rows), hovertemplate="%{text}<extra></extra>",
            # per-trace colour scale, not a shared coloraxis: plotly.js warns on legend symbols of coloraxis traces
            marker=dict(**marker, color=rows["params_ratio"].astype(float).tolist(), colorscale="Viridis", cmin=cmin, cmax=cmax,
                        showscale=not any(t.meta == POINTS_META for t in fig.data),
                        colorbar=dict(title="decoder<br>params<br>ratio")),
        ))
    fr = df[drawable & d.front].sort_values(x)
    if len(fr) > 1:
        fig.add_trace(go.Scatter(x=fr[x].astype(float).tolist(), y=fr[y].astype(float).tolist(), mode="lines", name="front line",
                                 line=dict(color="rgba(0,0,0,0.35)", width=1, shape="hv"), hoverinfo="skip", meta="front-line"))
    # reformed points: arrow from the unreformed position (hollow marker) to the reformed one
    if "is_reformed" in df.columns and (drawable & df["is_reformed"].astype(bool)).any():
        ref = df[drawable & df["is_reformed"].astype(bool)]
        fig.add_trace(go.Scatter(x=ref[f"{x}_unreformed"].astype(float).tolist(), y=ref[f"{y}_unreformed"].astype(float).tolist(),
                                 mode="markers", name=f"before reformation ({len(ref)}; red arrow = reformation)", meta="unreformed",
                                 marker=dict(symbol="circle-open", size=8, color="rgba(214,39,40,0.8)"),
                                 customdata=ref["id"].astype(int).tolist(),
                                 hovertemplate="id %{customdata} before reformation<br>%{x:.4g}, %{y:.4g}<extra></extra>"))
        for _, r in ref.iterrows():
            x0, y0 = float(r[f"{x}_unreformed"]), float(r[f"{y}_unreformed"])
            if not (np.isfinite(x0) and np.isfinite(y0)):
                continue
            fig.add_annotation(x=_ax(float(r[x]), False), y=_ax(float(r[y]), log_y), ax=_ax(x0, False), ay=_ax(y0, log_y),
                               xref="x", yref="y", axref="x", ayref="y", showarrow=True, arrowhead=2, arrowsize=1,
                               arrowwidth=1.2, arrowcolor="rgba(214,39,40,0.8)", text="")
    for rid, label in ((d.knee_id, "knee"),):
        if rid is None:
            continue
        r = df[df["id"] == rid].iloc[0]
        fig.add_annotation(x=_ax(float(r[x]), False), y=_ax(float(r[y]), log_y), text=f"<b>{label}</b> (id {rid})", showarrow=True,
                           arrowhead=0, ax=-60, ay=40, bgcolor="rgba(255,255,255,0.85)", bordercolor="black")
    # perplexities of broken subnets reach 1e10; clip the initial view so the usable region is not squashed
    ys = df.loc[drawable, y].astype(float)
    y_lo, y_hi = float(ys.min()), float(ys.max())
    clip = log_y and y_lo > 0 and y_hi > 1000 * y_lo
    if clip:
        fig.update_yaxes(range=[np.log10(y_lo / 1.3), np.log10(1000 * y_lo)])
        fig.add_annotation(xref="paper", yref="paper", x=1.0, y=1.0, xanchor="right", yanchor="top", showarrow=False,
                           text=f"{_label(y)} axis clipped at 1000x the best; the autoscale button shows all points",
                           font=dict(size=11, color="#666"), bgcolor="rgba(255,255,255,0.8)")
    n_base_front = int((drawable & d.front & base).sum())
    fig.update_layout(
        title=f"{_label(y)} vs {_label(x)}: {int(drawable.sum())} evaluated subnets, {int((drawable & d.front).sum())} on the front"
              + (f" ({n_base_front} of them {'a baseline' if n_base_front == 1 else 'baselines'})" if n_base_front else ""),
        xaxis_title=_label(x, d.obj) + "  (lower is better)",
        yaxis_title=_label(y) + ("  (log scale, lower is better)" if log_y else "  (lower is better)"),
        yaxis_type="log" if log_y else "linear", template="plotly_white", height=620,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
        margin=dict(t=110),
        updatemenus=[dict(type="buttons", direction="left", x=1.0, xanchor="right", y=1.12, yanchor="bottom", showactive=True, buttons=[
            dict(label="all points", method="restyle",
                 args=[{"visible": [True] * len(fig.data)}]),
            dict(label="front only", method="restyle",
                 args=[{"visible": [not (t.name or "").startswith(("dominated", "infeasible", "screened")) for t in fig.data]}]),
        ])],
    )
    return fig


def _ax(v: float, log: bool) -> float:
    """Annotation coordinates on a log axis are given in log10 units."""
    return float(np.log10(v)) if log and v > 0 else v


def _label(col: str, obj: Objectives | None = None) -> str:
    return label(col, obj)


def _layer_traces(d: RunData, rid: int, visible: bool = True):
    import plotly.graph_objects as go
    from search_spaces import Subnet

    r = d.df[d.df["id"] == rid].iloc[0]
    s = Subnet.from_json(r["subnet"])
    L = s.num_layers
    g = d.granularity
    kv = [c.kv_groups / max(d.max_kv[i], 1) if c.keep else 0.0 for i, c in enumerate(s.layers)]
    nb = [c.neurons / max(d.max_neurons[i], 1) if c.keep else 0.0 for i, c in enumerate(s.layers)]
    kv_t = [f"layer {i}: {c.kv_groups}/{d.max_kv[i]} KV groups" if c.keep else f"layer {i}: dropped" for i, c in enumerate(s.layers)]
    nb_t = [f"layer {i}: {c.neurons // g}/{d.max_neurons[i] // g} neuron blocks ({c.neurons}/{d.max_neurons[i]} neurons)"
            if c.keep else f"layer {i}: dropped" for i, c in enumerate(s.layers)]
    dropped = [i for i, c in enumerate(s.layers) if not c.keep]
    layers = list(range(L))
    return [
        go.Bar(x=layers, y=kv, name="attention: kept KV groups (with their query heads)", marker_color="#1f77b4", text=kv_t,
               hovertemplate="%{text}<extra></extra>", textposition="none", visible=visible, legendgroup="kv", showlegend=True),
        go.Bar(x=layers, y=nb, name="MLP: kept neuron blocks", marker_color="#ff7f0e", text=nb_t,
               hovertemplate="%{text}<extra></extra>", textposition="none", visible=visible, legendgroup="mlp", showlegend=True),
        go.Scatter(x=dropped, y=[0.5] * len(dropped), mode="markers", text=[f"layer {i}: dropped" for i in dropped],
                   hovertemplate="%{text}<extra></extra>",
                   marker=dict(symbol="x", size=12, color="#d62728"), name="dropped layer", visible=visible,
                   legendgroup="drop", showlegend=True),
    ]


def default_pick(d: RunData, front_ids: list[int], knee: int) -> int:
    """The fastest front member within 2x the best perplexity (a usable model, unlike the front's fast end)."""
    fr = d.df[d.df["id"].isin(front_ids)].sort_values(d.x)
    good = fr[fr[d.y] <= 2.0 * float(fr[d.y].min())]
    ids = [int(i) for i in good["id"] if int(i) != knee] or [int(i) for i in fr["id"] if int(i) != knee] or [knee]
    return ids[0]


def _point_title(d: RunData, rid: int, what: str) -> str:
    r = d.df[d.df["id"] == rid].iloc[0]
    return (f"{what}: id {rid} ({r.get('source', '')}) - {_label(d.y)} {float(r[d.y]):.4g}, {_label(d.x)} {float(r[d.x]):.4g}, "
            f"params ratio {float(r['params_ratio']):.3f}")


def layers_figure(run: Run | str | Path | RunData, row_id: int | None = None):
    """Per-layer kept fraction of KV groups and neuron blocks (dropped layers marked) for the knee (top) and a
    chosen point (bottom; a dropdown switches between all front members). ``row_id`` picks the initial one."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    d = run if isinstance(run, RunData) else RunData(run)
    front_ids = d.df[d.front & d.plotted].sort_values(d.x)["id"].astype(int).tolist()
    knee = d.knee_id if d.knee_id is not None else (front_ids[0] if front_ids else int(d.df["id"].iloc[0]))
    if row_id is None and front_ids:
        row_id = default_pick(d, front_ids, knee)
    choices = list(dict.fromkeys(([row_id] if row_id is not None else []) + front_ids)) or [knee]
    first = choices[0]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14,
                        subplot_titles=(_point_title(d, knee, "knee"), _point_title(d, first, "chosen point")))
    for t in _layer_traces(d, knee):
        fig.add_trace(t, row=1, col=1)
    per = 3
    for j, rid in enumerate(choices):
        for t in _layer_traces(d, rid, visible=(j == 0)):
            t.showlegend = False
            fig.add_trace(t, row=2, col=1)
    n_fixed = 3
    buttons = []
    for j, rid in enumerate(choices):
        vis = [True] * n_fixed + [k // per == j for k in range(per * len(choices))]
        buttons.append(dict(label=f"id {rid}", method="update",
                            args=[{"visible": vis}, {"annotations[1].text": _point_title(d, rid, "chosen point")}]))
    L = len(d.max_kv)
    fig.update_layout(template="plotly_white", barmode="group", height=560, title="Per-layer structure (fraction of the dense width kept)",
                      legend=dict(orientation="h", yanchor="bottom", y=1.06, x=0),
                      margin=dict(t=120),
                      updatemenus=[dict(buttons=buttons, direction="down", x=1.0, xanchor="right", y=0.43, yanchor="bottom",
                                        showactive=True)] if len(choices) > 1 else [])
    for row in (1, 2):
        fig.update_yaxes(range=[0, 1.08], title_text="kept fraction", row=row, col=1)
        fig.update_xaxes(range=[-0.6, L - 0.4], dtick=1 if L <= 40 else 5, row=row, col=1)
    fig.update_xaxes(title_text="decoder layer", row=2, col=1)
    return fig


def hypervolume_history(d: RunData) -> pd.DataFrame:
    """``hypervolume.csv`` when the search wrote it, else recomputed from the table in id order."""
    f = d.run.path / "hypervolume.csv"
    if f.is_file():
        h = pd.read_csv(f)
        if not h.empty and {"evaluations", "hypervolume"} <= set(h.columns):
            return h
    from nas_llm.front import hypervolume, reference_point

    rows = d.df[d.plotted].sort_values("id")
    F = rows[d.obj.names].to_numpy(float)
    if len(F) == 0:
        return pd.DataFrame(columns=["evaluations", "hypervolume"])
    fj = d.run.path / "front.json"
    ref = json.loads(fj.read_text()).get("reference_point") if fj.is_file() else None
    ref = np.asarray(ref, float) if ref is not None else reference_point(F, d.obj.directions)
    steps = sorted(set(np.linspace(1, len(F), min(len(F), 60)).astype(int)))
    return pd.DataFrame({"evaluations": steps, "hypervolume": [hypervolume(F[:k], ref, d.obj.directions) for k in steps]})


def hypervolume_figure(run: Run | str | Path | RunData):
    """Hypervolume of the front found so far against the number of evaluations."""
    import plotly.graph_objects as go

    d = run if isinstance(run, RunData) else RunData(run)
    h = hypervolume_history(d)
    fig = go.Figure(go.Scatter(x=h["evaluations"].tolist(), y=h["hypervolume"].astype(float).tolist(), mode="lines+markers",
                               name="hypervolume", hovertemplate="%{x} evaluations: HV %{y:.4g}<extra></extra>"))
    fig.update_layout(template="plotly_white", height=360, title="Hypervolume vs evaluations (higher = better front; flat = converged)",
                      xaxis_title="evaluations", yaxis_title="hypervolume")
    return fig


def parallel_figure(run: Run | str | Path | RunData):
    """Parallel coordinates of every objective (+ params ratio); drag on an axis to filter."""
    import plotly.graph_objects as go

    d = run if isinstance(run, RunData) else RunData(run)
    rows = d.df[d.plotted]
    cols = list(dict.fromkeys([*d.obj.names, "params_ratio"]))
    dims = [dict(label="on front", values=rows["on_front"].astype(int).tolist(), tickvals=[0, 1], ticktext=["no", "yes"])]
    for c in cols:
        v = rows[c].astype(float)
        if c == d.y and (v > 0).all() and v.max() > 100 * v.min():  # perplexity spans decades: a linear axis shows one blob
            dims.append(dict(label=f"log10 {_label(c)}", values=np.log10(v).tolist()))
        else:
            dims.append(dict(label=_label(c), values=v.tolist()))
    fig = go.Figure(go.Parcoords(line=dict(color=rows["params_ratio"].astype(float).tolist(), colorscale="Viridis", showscale=True,
                                           colorbar=dict(title="params<br>ratio")), dimensions=dims))
    fig.update_layout(height=420, title="All objectives (drag along an axis to filter)", margin=dict(l=80, r=80))
    return fig


def figures(run: Run | str | Path, row_id: int | None = None) -> dict[str, Any]:
    """All report figures by name, for notebooks."""
    d = RunData(run)
    return {"front": front_figure(d), "layers": layers_figure(d, row_id), "hypervolume": hypervolume_figure(d),
            "parallel": parallel_figure(d)}


# -- tables ----------------------------------------------------------------------------------------------
def _front_table(d: RunData, evals: dict[int, dict[str, Any]]) -> str:
    rows = d.df[d.front & d.plotted].sort_values(d.x)
    run_arg = shlex.quote(str(d.run.path))
    ev_cols = any(int(i) in evals for i in rows["id"])
    head = ["id", "source", *[_label(n) for n in d.obj.names], "params ratio", "layers kept", "reformed"]
    if ev_cols:
        head += ["test ppl (WikiText-2)", "zero-shot mean"]
    head.append("export command")
    out = ['<table class="sortable" id="front-table"><thead><tr>' + "".join(
        f'<th data-col="{i}" title="click to sort">{html.escape(h)}</th>' for i, h in enumerate(head)) + "</tr></thead><tbody>"]
    from search_spaces import Subnet

    for _, r in rows.iterrows():
        rid = int(r["id"])
        s = Subnet.from_json(r["subnet"])
        knee = " (knee)" if rid == d.knee_id else ""
        cells = [(rid, f"{rid}{knee}"), (str(r.get("source", "")), html.escape(str(r.get("source", ""))))]
        cells += [(float(r[n]), f"{float(r[n]):.4g}") for n in d.obj.names]
        cells += [(float(r["params_ratio"]), f"{float(r['params_ratio']):.3f}"), (len(s.kept_layers), f"{len(s.kept_layers)}/{s.num_layers}"),
                  (int(bool(r.get("is_reformed"))), "yes" if r.get("is_reformed") else "no")]
        if ev_cols:
            e = evals.get(rid, {})
            wt = (e.get("perplexity") or {}).get("wikitext2-test", {}).get("ppl")
            zm = e.get("zeroshot_mean")
            cells += [(wt if wt is not None else "", f"{wt:.3f}" if wt is not None else ""), (zm if zm is not None else "", f"{zm:.4f}" if zm is not None else "")]
        cmd = f"nas-llm export {run_arg} --pick {rid} --out exports/id{rid}"
        cells.append((cmd, f"<code>{html.escape(cmd)}</code>"))
        out.append("<tr" + (' class="knee"' if knee else "") + ">" + "".join(
            f'<td data-v="{html.escape(str(v))}">{t}</td>' for v, t in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _evals_table(evals: dict[int, dict[str, Any]]) -> str:
    if not evals:
        return ("<p>No evaluated exports yet. Export a row (command in the table above), then run "
                "<code>nas-llm evaluate OUT_DIR</code>; re-run the report to see test perplexity and zero-shot accuracy here.</p>")
    tasks = list(dict.fromkeys(t for e in evals.values() for t in (e.get("zeroshot") or {})))
    ppls = list(dict.fromkeys(p for e in evals.values() for p in (e.get("perplexity") or {})))
    head = ["id", "folder", "params", *[f"{p} ppl" for p in ppls], *tasks, "zero-shot mean", "limit"]
    out = ['<table class="sortable"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for rid, e in sorted(evals.items()):
        cells = [str(rid), f"<code>{html.escape(str(e.get('folder', '')))}</code>", f"{e.get('params', 0):,}"]
        cells += [f"{e['perplexity'][p]['ppl']:.3f}" if p in (e.get("perplexity") or {}) else "" for p in ppls]
        for t in tasks:
            z = (e.get("zeroshot") or {}).get(t)
            cells.append(f"{z[z['metric']]:.4f}" if z else "")
        cells += [f"{e['zeroshot_mean']:.4f}" if e.get("zeroshot_mean") is not None else "", str(e.get("limit") or "none")]
        out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table><p class='note'>Zero-shot: acc_norm for PIQA, ARC, OpenBookQA, HellaSwag (1,000-item subset); "
               "acc for BoolQ and WinoGrande. With a limit, only the first N items of each task were scored.</p>")
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1300px;color:#222;padding:0 16px}
h1{margin-bottom:4px} .sub{color:#555;margin-top:0} .note{color:#555;font-size:90%}
table{border-collapse:collapse;font-size:13px;margin:8px 0} th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f3f3f3;cursor:pointer;user-select:none} td:nth-child(2){text-align:left} td code{font-size:11px}
tr.knee{background:#fff6d5} .kv{display:grid;grid-template-columns:max-content auto;gap:2px 14px;font-size:14px}
section{margin-top:28px}
"""

_JS = """
window.nasllmErrors = [];
window.addEventListener('error', e => window.nasllmErrors.push(String(e.message)));
document.addEventListener('click', e => {
  const th = e.target.closest('table.sortable th'); if (!th) return;
  const table = th.closest('table'), i = Array.from(th.parentNode.children).indexOf(th);
  const asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
  const rows = Array.from(table.tBodies[0].rows);
  const key = r => { const c = r.cells[i]; const v = c.dataset.v !== undefined ? c.dataset.v : c.textContent;
                     const f = parseFloat(v); return isNaN(f) ? v : f; };
  rows.sort((a, b) => { const x = key(a), y = key(b); return (x > y ? 1 : x < y ? -1 : 0) * (asc ? 1 : -1); });
  rows.forEach(r => table.tBodies[0].appendChild(r));
});
window.addEventListener('load', () => {
  // a hook for tests and scripts: how many evaluated subnets the front plot shows
  const gd = document.getElementById('nasllm-front');
  const n = gd && gd.data ? gd.data.filter(t => t.meta === 'subnets').reduce((a, t) => a + t.x.length, 0) : -1;
  document.body.setAttribute('data-subnet-points', String(n));
  document.body.setAttribute('data-js-errors', String(window.nasllmErrors.length));
});
"""


def _latency_text(col: str, obj: Objectives | None = None) -> str:
    runtime = runtime_text(obj.details.get(col)) if obj is not None else ""
    if runtime:
        kind = "predicted from a lookup table of per-layer timings" if col.endswith("_lut") else "measured"
        return f"{kind} in {runtime} on the search machine"
    if col == "latency_lut":
        return "predicted from a per-layer lookup table of timings measured on the search machine"
    if col.startswith("latency"):
        return "measured on the search machine"
    return f"not an objective of this run (x axis: {col})"


def _ppl_text(settings: dict) -> str:
    a = (settings.get("objective_args") or {}).get("perplexity") or {}
    if not a:
        return ""
    txt = f"{a.get('source', '?')}, {a.get('n_samples', '?')} x {a.get('seq_len', '?')} tokens"
    if settings.get("screen_fidelity"):
        txt += f" (screening at fidelity {settings['screen_fidelity']}: a fraction of those samples)"
    return txt


def _dense_text(d: RunData) -> str:
    """'For reference, the dense model: ...' when the run evaluated it (the yardstick for every other number)."""
    dense = d.df[(d.df["source"].astype(str) == "dense") & d.plotted] if "source" in d.df.columns else d.df.iloc[:0]
    if dense.empty:
        return ""
    r = dense.iloc[0]
    return f"For reference, the dense model (id {int(r['id'])}): {_label(d.y)} {float(r[d.y]):.4g}, {_label(d.x)} {float(r[d.x]):.4g}. "


def build_html(run: Run | str | Path, row_id: int | None = None) -> str:
    """The whole report page as a string (plotly.js embedded once)."""
    d = RunData(run)
    evals = d.evals()
    figs = [("nasllm-front", front_figure(d)), ("nasllm-layers", layers_figure(d, row_id)),
            ("nasllm-hv", hypervolume_figure(d)), ("nasllm-parallel", parallel_figure(d))]
    divs = [f.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=name, config={"displaylogo": False, "responsive": True})
            for i, (name, f) in enumerate(figs)]
    s = d.settings
    n_all, n_draw = len(d.df), int(d.plotted.sum())
    skipped = n_all - n_draw
    cal = s.get("calibration") or {}
    info = {
        "model": s.get("model", "?"),
        "objectives": ", ".join(f"{n} ({dr})" for n, dr in zip(d.obj.names, d.obj.directions)),
        "constraints": ", ".join(map(str, s.get("constraints") or [])) or "none",
        "search": f"{s.get('driver', '?')}, seed {s.get('seed', '?')}, granularity {d.granularity}, importance {s.get('importance', '?')}",
        "importance calibration": f"{cal.get('source', '?')}, {cal.get('n_samples', '?')} x {cal.get('seq_len', '?')} tokens" if cal else "?",
        **({"perplexity measured on": _ppl_text(s)} if _ppl_text(s) else {}),
        "evaluations": f"{n_all} ({int((d.front & d.plotted).sum())} on the front" + (f"; {skipped} without all values not drawn" if skipped else "") + ")",
        "reformation": json.dumps(s["reform"]) if s.get("reform") else "not reformed",
        "command": s.get("command", ""),
    }
    knee_line = ""
    if d.knee_id is not None:
        k = d.df[d.df["id"] == d.knee_id].iloc[0]
        knee_line = (f"<p><b>Knee</b> (best trade-off, what <code>nas-llm select</code> picks by default): id {d.knee_id}, "
                     f"{_label(d.y)} {float(k[d.y]):.4g}, {_label(d.x)} {float(k[d.x]):.4g}, params ratio {float(k['params_ratio']):.3f}. "
                     f"{_dense_text(d)}Export it: <code>nas-llm export {html.escape(shlex.quote(str(d.run.path)))} --pick knee --out exports/knee</code></p>")
    title = f"nas-llm report: {d.run.path.name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style>
<script>{_JS}</script></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="sub">Every point is one evaluated subnet. Perplexity is on a calibration split (not a test set); latency is
{html.escape(_latency_text(d.x, d.obj))}. Reformed subnets show their reformed values, with a red arrow from where they were before
reformation. Test-set perplexity and zero-shot accuracy appear under "Evaluated exports" once an export was evaluated.</p>
<div class="kv">{''.join(f'<b>{html.escape(k)}</b><span>{html.escape(str(v))}</span>' for k, v in info.items())}</div>
{knee_line}
<section><h2>Front</h2><p class="note">Hover a point for its per-layer structure and all objective values; click legend
entries (or the buttons) to hide/show dominated, screened-only and infeasible points.</p>{divs[0]}</section>
<section><h2>Per-layer structure</h2><p class="note">Bar height = fraction of the dense layer's KV groups (attention) and
{d.granularity}-neuron blocks (MLP) kept; a red x marks a dropped layer. Top: the knee. Bottom: another point (initially the fastest front member within 2x the best perplexity, or --pick ID); the dropdown switches between all front members.</p>{divs[1]}</section>
<section><h2>Front members</h2><p class="note">Click a column header to sort. Each row's command exports that subnet.</p>
{_front_table(d, evals)}</section>
<section><h2>Evaluated exports</h2>{_evals_table(evals)}</section>
<section><h2>Search progress</h2>{divs[2]}</section>
<section><h2>All objectives</h2>{divs[3]}</section>
</body></html>
"""


def write_report(run: Run | str | Path, out: str | Path | None = None, row_id: int | None = None) -> Path:
    """Write the report (default ``RUN/report.html``) atomically; returns its path."""
    run = run if isinstance(run, Run) else Run(run)
    path = Path(out) if out else run.path / "report.html"
    atomic_write_text(path, build_html(run, row_id))
    return path


__all__ = ["RunData", "build_html", "figures", "front_figure", "hypervolume_figure", "layers_figure", "parallel_figure", "write_report"]

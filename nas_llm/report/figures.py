"""The report's pictures: plain ``plotly.graph_objects.Figure`` objects, so a notebook shows what the page shows.

Each builder draws what :mod:`nas_llm.report.data` computed; nothing here decides what a point is.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nas_llm.run import Run

from .data import POINTS_META, RunData, default_pick, front_info, hover_texts, hypervolume_history, layer_bars, parallel_dims, point_title

Source = Run | str | Path | RunData


def _data(run: Source) -> RunData:
    return run if isinstance(run, RunData) else RunData(run)


def _ax(v: float, log: bool) -> float:
    """Annotation coordinates on a log axis are given in log10 units."""
    return float(np.log10(v)) if log and v > 0 else v


def front_figure(run: Source, log_y: bool | None = None):
    """Quality vs latency, one point per evaluated subnet; dominated points faded (legend/button toggles them).

    ``log_y``: a log y axis; default: the y objective's ``log_scale`` trait.
    """
    import plotly.graph_objects as go

    d = _data(run)
    info = front_info(d, log_y)
    x, y, log_y = info.x, info.y, info.log_y
    drawable = d.df[d.plotted]
    cmin, cmax = float(drawable["params_ratio"].min()), float(drawable["params_ratio"].max())
    cmax = cmax if cmax > cmin else cmin + 1e-6
    fig = go.Figure()
    for g in info.groups:
        rows = g.rows
        fig.add_trace(go.Scatter(
            x=rows[x].astype(float).tolist(), y=rows[y].astype(float).tolist(), mode="markers", name=f"{g.name} ({len(rows)})",
            meta=POINTS_META, customdata=rows["id"].astype(int).tolist(),
            text=hover_texts(d, rows), hovertemplate="%{text}<extra></extra>",
            # per-trace colour scale, not a shared coloraxis: plotly.js warns on legend symbols of coloraxis traces
            marker=dict(**g.marker, color=rows["params_ratio"].astype(float).tolist(), colorscale="Viridis", cmin=cmin, cmax=cmax,
                        showscale=not any(t.meta == POINTS_META for t in fig.data),
                        colorbar=dict(title="decoder<br>params<br>ratio")),
        ))
    if len(info.front_line[0]) > 1:
        fig.add_trace(go.Scatter(x=info.front_line[0], y=info.front_line[1], mode="lines", name="front line",
                                 line=dict(color="rgba(0,0,0,0.35)", width=1, shape="hv"), hoverinfo="skip", meta="front-line"))
    _reformation_arrows(fig, info)
    if info.knee is not None:
        rid, kx, ky = info.knee
        fig.add_annotation(x=_ax(kx, False), y=_ax(ky, log_y), text=f"<b>knee</b> (id {rid})", showarrow=True,
                           arrowhead=0, ax=-60, ay=40, bgcolor="rgba(255,255,255,0.85)", bordercolor="black")
    if info.y_range is not None:
        fig.update_yaxes(range=list(info.y_range))
    for note in info.notes:
        fig.add_annotation(xref="paper", yref="paper", x=1.0, y=1.0, xanchor="right", yanchor="top", showarrow=False,
                           text=note, font=dict(size=11, color="#666"), bgcolor="rgba(255,255,255,0.8)")
    fig.update_layout(
        title=info.title, xaxis_title=info.x_title, yaxis_title=info.y_title,
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


def _reformation_arrows(fig, info) -> None:
    """Reformed points: an arrow from the unreformed position (hollow marker) to the reformed one."""
    import plotly.graph_objects as go

    ref, x, y, log_y = info.reformed, info.x, info.y, info.log_y
    if ref.empty:
        return
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


def _layer_traces(d: RunData, rid: int, visible: bool = True):
    import plotly.graph_objects as go

    b = layer_bars(d, rid)
    layers = list(range(len(b.kv)))
    return [
        go.Bar(x=layers, y=b.kv, name="attention: kept KV groups (with their query heads)", marker_color="#1f77b4", text=b.kv_text,
               hovertemplate="%{text}<extra></extra>", textposition="none", visible=visible, legendgroup="kv", showlegend=True),
        go.Bar(x=layers, y=b.neurons, name="MLP: kept neuron blocks", marker_color="#ff7f0e", text=b.neuron_text,
               hovertemplate="%{text}<extra></extra>", textposition="none", visible=visible, legendgroup="mlp", showlegend=True),
        go.Scatter(x=b.dropped, y=[0.5] * len(b.dropped), mode="markers", text=[f"layer {i}: dropped" for i in b.dropped],
                   hovertemplate="%{text}<extra></extra>",
                   marker=dict(symbol="x", size=12, color="#d62728"), name="dropped layer", visible=visible,
                   legendgroup="drop", showlegend=True),
    ]


def layers_figure(run: Source, row_id: int | None = None):
    """Per-layer kept fraction of KV groups and neuron blocks (dropped layers marked) for the knee (top) and a
    chosen point (bottom; a dropdown switches between all front members). ``row_id`` picks the initial one."""
    from plotly.subplots import make_subplots

    d = _data(run)
    front_ids = d.df[d.front & d.plotted].sort_values(d.x)["id"].astype(int).tolist()
    knee = d.knee_id if d.knee_id is not None else (front_ids[0] if front_ids else int(d.df["id"].iloc[0]))
    if row_id is None and front_ids:
        row_id = default_pick(d, front_ids, knee)
    choices = list(dict.fromkeys(([row_id] if row_id is not None else []) + front_ids)) or [knee]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14,
                        subplot_titles=(point_title(d, knee, "knee"), point_title(d, choices[0], "chosen point")))
    for t in _layer_traces(d, knee):
        fig.add_trace(t, row=1, col=1)
    per = 3
    for j, rid in enumerate(choices):
        for t in _layer_traces(d, rid, visible=(j == 0)):
            t.showlegend = False
            fig.add_trace(t, row=2, col=1)
    buttons = []
    for j, rid in enumerate(choices):
        vis = [True] * per + [k // per == j for k in range(per * len(choices))]
        buttons.append(dict(label=f"id {rid}", method="update",
                            args=[{"visible": vis}, {"annotations[1].text": point_title(d, rid, "chosen point")}]))
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


def hypervolume_figure(run: Source):
    """Hypervolume of the front found so far against the number of evaluations."""
    import plotly.graph_objects as go

    h = hypervolume_history(_data(run))
    fig = go.Figure(go.Scatter(x=h["evaluations"].tolist(), y=h["hypervolume"].astype(float).tolist(), mode="lines+markers",
                               name="hypervolume", hovertemplate="%{x} evaluations: HV %{y:.4g}<extra></extra>"))
    fig.update_layout(template="plotly_white", height=360, title="Hypervolume vs evaluations (higher = better front; flat = converged)",
                      xaxis_title="evaluations", yaxis_title="hypervolume")
    return fig


def parallel_figure(run: Source):
    """Parallel coordinates of every objective (+ params ratio); drag on an axis to filter."""
    import plotly.graph_objects as go

    d = _data(run)
    rows = d.df[d.plotted]
    fig = go.Figure(go.Parcoords(line=dict(color=rows["params_ratio"].astype(float).tolist(), colorscale="Viridis", showscale=True,
                                           colorbar=dict(title="params<br>ratio")), dimensions=parallel_dims(d)))
    fig.update_layout(height=420, title="All objectives (drag along an axis to filter)", margin=dict(l=80, r=80))
    return fig


def figures(run: Run | str | Path, row_id: int | None = None) -> dict[str, Any]:
    """All report figures by name, for notebooks."""
    d = RunData(run)
    return {"front": front_figure(d), "layers": layers_figure(d, row_id), "hypervolume": hypervolume_figure(d),
            "parallel": parallel_figure(d)}


__all__ = ["figures", "front_figure", "hypervolume_figure", "layers_figure", "parallel_figure"]

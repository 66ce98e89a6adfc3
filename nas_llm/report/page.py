"""The report page: one self-contained HTML file (plotly.js embedded once, opens offline).

The page arranges :mod:`nas_llm.report.figures` and the front-member / evaluated-export tables; every
number and text on it comes from :mod:`nas_llm.report.data`.
"""
from __future__ import annotations

import html
import shlex
from pathlib import Path
from typing import Any

from nas_llm.errors import ConfigError
from nas_llm.model.atomic import atomic_write_text
from nas_llm.run import Run
from search_spaces import Subnet

from .data import RunData, dense_text, run_info, x_axis_text
from .figures import front_figure, hypervolume_figure, layers_figure, parallel_figure


def _front_table(d: RunData, evals: dict[int, dict[str, Any]]) -> str:
    rows = d.df[d.front & d.plotted].sort_values(d.x)
    run_arg = shlex.quote(str(d.run.path))
    ev_cols = any(int(i) in evals for i in rows["id"])
    head = ["id", "source", *[d.label(n) for n in d.obj.names], "params ratio", "layers kept", "reformed"]
    if ev_cols:
        head += ["test ppl (WikiText-2)", "zero-shot mean"]
    head.append("export command")
    out = ['<table class="sortable" id="front-table"><thead><tr>' + "".join(
        f'<th data-col="{i}" title="click to sort">{html.escape(h)}</th>' for i, h in enumerate(head)) + "</tr></thead><tbody>"]
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


def build_html(run: Run | str | Path, row_id: int | None = None) -> str:
    """The whole report page as a string (plotly.js embedded once)."""
    d = RunData(run)
    if row_id is not None and row_id not in set(d.df["id"].astype(int)):
        raise ConfigError(f"--pick {row_id}: no evaluation with that id in {d.run.table_file} "
                          f"(ids {int(d.df['id'].min())}..{int(d.df['id'].max())}; front: {sorted(int(i) for i in d.df.loc[d.front, 'id'])})")
    evals = d.evals()
    figs = [("nasllm-front", front_figure(d)), ("nasllm-layers", layers_figure(d, row_id)),
            ("nasllm-hv", hypervolume_figure(d)), ("nasllm-parallel", parallel_figure(d))]
    divs = [f.to_html(full_html=False, include_plotlyjs=(i == 0), div_id=name, config={"displaylogo": False, "responsive": True})
            for i, (name, f) in enumerate(figs)]
    info = run_info(d)
    knee_line = ""
    if d.knee_id is not None:
        k = d.row(d.knee_id)
        knee_line = (f"<p><b>Knee</b> (best trade-off, what <code>nas-llm select</code> picks by default): id {d.knee_id}, "
                     f"{d.label(d.y)} {float(k[d.y]):.4g}, {d.label(d.x)} {float(k[d.x]):.4g}, params ratio {float(k['params_ratio']):.3f}. "
                     f"{dense_text(d)}Export it: <code>nas-llm export {html.escape(shlex.quote(str(d.run.path)))} --pick knee --out exports/knee</code></p>")
    title = f"nas-llm report: {d.run.path.name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style>
<script>{_JS}</script></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="sub">Every point is one evaluated subnet. {html.escape(d.y)} is on a calibration split (not a test set);
{html.escape(x_axis_text(d))}. Reformed subnets show their reformed values, with a red arrow from where they were before
reformation. Test-set perplexity and zero-shot accuracy appear under "Evaluated exports" once an export was evaluated.</p>
<div class="kv">{''.join(f'<b>{html.escape(k)}</b><span>{html.escape(str(v))}</span>' for k, v in info.items())}</div>
{knee_line}
<section><h2>Front</h2><p class="note">Hover a point for its per-layer structure and all objective values; click legend
entries (or the buttons) to hide/show dominated, screened-only and infeasible points.</p>{divs[0]}</section>
<section><h2>Per-layer structure</h2><p class="note">Bar height = fraction of the dense layer's KV groups (attention) and
{d.granularity}-neuron blocks (MLP) kept; a red x marks a dropped layer. Top: the knee. Bottom: another point (initially the fastest front member within 2x the best {html.escape(d.y)}, or --pick ID); the dropdown switches between all front members.</p>{divs[1]}</section>
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




__all__ = ["build_html", "write_report"]

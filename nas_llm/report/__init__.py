"""``nas-llm report runs/NAME``: one self-contained HTML page to explore a run (plotly.js embedded, works offline).

Three steps, as Optuna's visualisations compute ``_ParetoFrontInfo`` before drawing: :mod:`.data` decides
what is shown (pure, testable without plotly), :mod:`.figures` draws it (plain ``plotly.graph_objects.Figure``
objects, so a notebook shows the same pictures as the page), :mod:`.page` lays out the HTML. Values are the
ones an export would ship (reformed where reformed, :mod:`nas_llm.front`); the knee is ``select``'s knee,
so ``report``, ``select`` and ``export --pick knee`` agree.
"""
from __future__ import annotations

from .data import POINTS_META, FrontInfo, RunData, front_info
from .figures import figures, front_figure, hypervolume_figure, layers_figure, parallel_figure
from .page import build_html, write_report

__all__ = ["POINTS_META", "FrontInfo", "RunData", "build_html", "figures", "front_figure", "front_info", "hypervolume_figure",
           "layers_figure", "parallel_figure", "write_report"]

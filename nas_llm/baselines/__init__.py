"""Published pruning baselines, expressed as subnets of *our* space (one module per method).

Every baseline returns a :class:`Baseline` (a ``Subnet`` + the ``Ranking`` that resolves it + the
weight update the method applies afterwards), so slicing, export, evaluation and latency are
literally the same code for the baselines and for the search. Each is registered in
:data:`BASELINES` with its traits (``needs``, ``structure``, ``granularity``, ``reform``,
``head_unit``; :func:`traits`) and hits the requested decoder-parameter ratio within one
granularity step (:func:`ratio_step`; one structure for granularity 1; one layer for depth).

=================  ===========================================================  ==================
name               method                                                       module
=================  ===========================================================  ==================
magnitude          uniform widths, sum |W| of coupled weights                   ``uniform``
wanda-sp           uniform widths, Wanda-sp (FLAP Sec. 5)                       ``uniform``
uniform-hybrid     uniform widths, the search's default ranking (OBS/Wanda-sp)  ``uniform``
owl-wanda-sp       OWL's outlier-weighted per-layer widths, Wanda-sp scores     ``owl``
flap               FLAP as its authors' code runs it, granularity 1             ``flap``
flap-ours          FLAP's global structure in our space (granularity 64)        ``flap_ours``
shortgpt           drop the layers of lowest Block Influence                    ``shortgpt``
sleb               greedy block removal by calibration perplexity               ``sleb``
=================  ===========================================================  ==================
"""
from __future__ import annotations

from .base import (BASELINES, HEAD_ROUNDING, TRAITS, Baseline, baseline, bias_compensated, calibration_stats,  # noqa: F401
                   head_units, layer_choice, ratio_step, traits, uniform_subnet)
from .flap import Fluctuation, collect_fluctuation, flap, flap_official_metrics  # noqa: F401
from .flap_ours import flap_metrics, flap_ours  # noqa: F401
from .owl import outlier_ratios, owl_densities, owl_wanda_sp  # noqa: F401
from .shortgpt import shortgpt  # noqa: F401
from .sleb import removal_order, resume_removal_order, sleb  # noqa: F401
from .uniform import magnitude, uniform_hybrid, wanda_sp  # noqa: F401

__all__ = ["BASELINES", "HEAD_ROUNDING", "TRAITS", "Baseline", "Fluctuation", "baseline", "bias_compensated",
           "calibration_stats", "collect_fluctuation", "flap", "flap_metrics", "flap_official_metrics", "flap_ours",
           "head_units", "layer_choice", "magnitude", "outlier_ratios", "owl_densities", "owl_wanda_sp", "ratio_step", "removal_order",
           "resume_removal_order",
           "shortgpt", "sleb", "traits", "uniform_hybrid", "uniform_subnet", "wanda_sp"]

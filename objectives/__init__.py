"""Objectives: what a search minimises or constrains. The plug-in point for users."""
from .base import (KINDS, OBJECTIVES, Constraint, Context, FunctionObjective, Objective, Traits, can_score_model, checked_score,
                   describe_objective, get_objective)
from .params import KVCacheBytes, Params, ParamsRatio, WeightBytes
from search_spaces.registry import Registry, import_path
from .latency import Latency, LatencyResult, measure_interleaved, measure_latency
from .perplexity import Perplexity, perplexity_of
from .reformed import ReformedPerplexity
from .predictors import (PREDICTORS, LatencyLUT, LatencyPredictor, LatencyRoofline, PredictedLatency, cached_measurement,
                         checked_predict, get_predictor)
from .lut import LookupTablePredictor
from .roofline import RooflinePredictor, measure_peaks, operator_costs
from .validation import sample_spread, validate_predictors
from .llamacpp import LatencyLlamaCpp  # llama.cpp latency objectives (llama_cpp itself is imported on use)
from .llamacpp_lut import LatencyLlamaCppLUT, LlamaCppLUT

__all__ = [
    "KINDS", "OBJECTIVES", "Constraint", "Context", "FunctionObjective", "Objective", "Traits", "can_score_model", "checked_score",
    "describe_objective", "get_objective",
    "KVCacheBytes", "Params", "ParamsRatio", "WeightBytes", "Registry", "import_path",
    "Latency", "LatencyResult", "measure_interleaved", "measure_latency", "Perplexity", "ReformedPerplexity", "perplexity_of",
    "PREDICTORS", "LatencyLUT", "LatencyPredictor", "LatencyRoofline", "LookupTablePredictor", "PredictedLatency",
    "RooflinePredictor", "cached_measurement", "checked_predict", "get_predictor", "measure_peaks", "operator_costs",
    "sample_spread", "validate_predictors", "LatencyLlamaCpp", "LatencyLlamaCppLUT", "LlamaCppLUT",
]

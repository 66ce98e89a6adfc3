"""Objectives: what a search minimises or constrains. The plug-in point for users."""
from .base import OBJECTIVES, Constraint, Context, FunctionObjective, Objective, checked_score, get_objective
from .params import KVCacheBytes, Params, ParamsRatio, WeightBytes
from search_spaces.registry import Registry, import_path
from .latency import Latency, LatencyResult, measure_interleaved, measure_latency
from .perplexity import Perplexity, ReformedPerplexity, perplexity_of
from .predictors import (PREDICTORS, LatencyLUT, LatencyPredictor, LatencyRoofline, LookupTablePredictor,
                         PredictedLatency, RooflinePredictor, checked_predict, get_predictor)
from .llamacpp import LatencyLlamaCpp  # llama.cpp latency objectives (llama_cpp itself is imported on use)
from .llamacpp_lut import LatencyLlamaCppLUT, LlamaCppLUT

__all__ = [
    "OBJECTIVES", "Constraint", "Context", "FunctionObjective", "Objective", "checked_score", "get_objective",
    "KVCacheBytes", "Params", "ParamsRatio", "WeightBytes", "Registry", "import_path",
    "Latency", "LatencyResult", "measure_interleaved", "measure_latency", "Perplexity", "ReformedPerplexity", "perplexity_of",
    "PREDICTORS", "LatencyLUT", "LatencyPredictor", "LatencyRoofline", "LookupTablePredictor", "PredictedLatency",
    "RooflinePredictor", "checked_predict", "get_predictor", "LatencyLlamaCpp", "LatencyLlamaCppLUT", "LlamaCppLUT",
]

"""Mistral: LLaMA's layout (sliding window lives in the config, untouched by pruning)."""
from .family import Family, register_family

MISTRAL = register_family(Family(name="mistral", architectures=("MistralForCausalLM",), model_types=("mistral",)))

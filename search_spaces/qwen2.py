"""Qwen2: LLaMA's layout with biases on q/k/v (not o)."""
from .family import Family, register_family

QWEN2 = register_family(Family(name="qwen2", architectures=("Qwen2ForCausalLM",), model_types=("qwen2",)))

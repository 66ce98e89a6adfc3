"""LLaMA (MHA and GQA) -- also covers SmolLM2."""
from .family import Family, register_family

LLAMA = register_family(Family(name="llama", architectures=("LlamaForCausalLM",), model_types=("llama",)))

"""Qwen3: LLaMA's layout plus q_norm/k_norm over head_dim (shared by heads, never sliced)."""
from .family import Family, register_family

QWEN3 = register_family(
    Family(name="qwen3", architectures=("Qwen3ForCausalLM",), model_types=("qwen3",), head_norms=("q_norm", "k_norm"))
)

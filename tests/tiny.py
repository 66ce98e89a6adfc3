"""Tiny random-weight models of every supported family, for fast exact tests."""
from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

COMMON = dict(hidden_size=32, intermediate_size=96, num_hidden_layers=4, vocab_size=128,
              max_position_embeddings=128, rms_norm_eps=1e-6, tie_word_embeddings=False)

CONFIGS = {
    "llama-mha": lambda: LlamaConfig(**COMMON, num_attention_heads=4, num_key_value_heads=4),
    "llama-mqa": lambda: LlamaConfig(**COMMON, num_attention_heads=4, num_key_value_heads=1),  # one KV group
    "llama-gqa": lambda: LlamaConfig(**{**COMMON, "hidden_size": 48}, num_attention_heads=6, num_key_value_heads=3, head_dim=8),
    "mistral": lambda: MistralConfig(**COMMON, num_attention_heads=4, num_key_value_heads=2, sliding_window=64),
    "qwen2": lambda: Qwen2Config(**COMMON, num_attention_heads=4, num_key_value_heads=2),
    "qwen3": lambda: Qwen3Config(**{**COMMON, "tie_word_embeddings": True}, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
}
FAMILIES = list(CONFIGS)


def _auto_configs() -> dict:
    """Decoder families transformers ships and nas-llm does not declare (recognised from their modules):
    Gemma2 (four norms per layer, explicit head_dim, logit soft-capping), OLMo2 (q/k norms over the whole
    projection width, no input norm), Gemma3 (four norms, q/k norms over head_dim, explicit head_dim)."""
    from transformers import Gemma2Config, Gemma3TextConfig, Olmo2Config

    c = {k: v for k, v in COMMON.items() if k != "tie_word_embeddings"}
    return {
        "gemma2": lambda: Gemma2Config(**c, num_attention_heads=4, num_key_value_heads=2, head_dim=12, sliding_window=64,
                                       query_pre_attn_scalar=12, tie_word_embeddings=True),
        "olmo2": lambda: Olmo2Config(**c, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False),
        "gemma3": lambda: Gemma3TextConfig(**{**c, "hidden_size": 48}, num_attention_heads=6, num_key_value_heads=2, head_dim=8, sliding_window=64,
                                           query_pre_attn_scalar=8, tie_word_embeddings=True),
    }


AUTO_FAMILIES = ["gemma2", "olmo2", "gemma3"]


def tiny_model(name: str = "llama-gqa", seed: int = 0):
    torch.manual_seed(seed)
    cfg = CONFIGS[name]() if name in CONFIGS else _auto_configs()[name]()
    cfg._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
    with torch.no_grad():  # larger-than-init weights so that differences show
        for n, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
            elif "bias" in n:
                p.normal_(0, 0.1)
            else:
                p.uniform_(0.5, 1.5)
    return model

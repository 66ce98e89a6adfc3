"""llama.cpp as a runtime (through llama-cpp-python): quantise, load-check, score and time GGUF files.

Steps that may abort the process inside C++ (a bad tensor shape trips a ``GGML_ASSERT``) run in a
child Python process: :func:`quantize` and :func:`check_loads` then surface llama.cpp's own
error lines instead of killing the caller. Scoring and timing run in-process on files that passed
the load check.

llama.cpp's default KV cache is f16, which alone moves logits by ~1e-3; :func:`open_model` with
``f32_kv=True`` keeps the cache in f32 so an f32 GGUF can be compared with PyTorch exactly.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from nas_llm.errors import ConfigError
from nas_llm.errors import NasLLMError

INSTALL_HINT = ("pip install llama-cpp-python==0.3.36 (`bash setup.sh` does it; pip builds llama.cpp from source with "
                "cmake and a C++ compiler the first time, ~20 min on 2 cores, then reuses its cached wheel)")
# outtype -> llama.cpp's llama_ftype (llama.h: LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q8_0, MOSTLY_Q4_K_M)
FTYPES = {"f32": 0, "f16": 1, "q8_0": 7, "q4_k_m": 15}
OUTTYPES = tuple(FTYPES)


class LlamaCppError(NasLLMError, ValueError):
    """llama.cpp refused a file or an operation; the message carries llama.cpp's own error lines."""


def require() -> Any:
    """The ``llama_cpp`` module, or an error that says how to install it."""
    try:
        import llama_cpp
    except ImportError as e:
        raise ImportError(f"llama.cpp is not installed in this environment: {INSTALL_HINT}") from e
    return llama_cpp


def default_threads() -> int:
    """The physical cores (llama.cpp's own default), else the logical CPUs; recorded wherever timings are."""
    try:
        import psutil  # a dependency of accelerate

        n = psutil.cpu_count(logical=False)
    except ImportError:
        n = None
    return max(1, n or os.cpu_count() or 1)


def check_outtype(outtype: str) -> str:
    if outtype not in FTYPES:
        raise LlamaCppError(f"unknown GGUF type {outtype!r}; valid types: {', '.join(OUTTYPES)}")
    return outtype


# -- child-process steps ---------------------------------------------------------------------------
_QUANTIZE = r"""
import ctypes, sys, llama_cpp
p = llama_cpp.llama_model_quantize_default_params()
p.ftype, p.nthread = int(sys.argv[3]), int(sys.argv[4])
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p))
sys.exit(0 if rc == 0 else 3)
"""

_CHECK = r"""
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, n_batch=64, n_ubatch=64, n_threads=1, n_threads_batch=1, verbose=True)
bos = llm.token_bos()
llm.eval([bos if 0 <= bos < llm.n_vocab() else 0, 0])
print("loaded", llm.n_vocab())
"""

_ERROR_WORDS = ("error", "failed", "wrong", "assert", "invalid", "cannot", "unknown", "missing", "exception", "abort")


def error_lines(text: str, limit: int = 6) -> str:
    """The lines of a llama.cpp log that say what went wrong (the last lines when none says so)."""
    lines = [ln.strip() for ln in text.splitlines()  # llama.cpp's log lines, not Python's traceback
             if ln.strip() and not ln.startswith((" ", "\t", "Traceback"))]
    hits = [ln for ln in lines if any(w in ln.lower() for w in _ERROR_WORDS)]
    return " | ".join((hits or lines)[-limit:]) or "no message (the process ended without output)"


def _child(script: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess:
    require()
    env = {**os.environ, "PYTHONFAULTHANDLER": "0"}
    try:
        return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=env, errors="replace")
    except subprocess.TimeoutExpired as e:
        raise LlamaCppError(f"llama.cpp did not finish within {timeout:.0f} s ({' '.join(map(str, args))})") from e


def quantize(src: str | os.PathLike, dst: str | os.PathLike, outtype: str, threads: int = 0, timeout: float = 3600) -> None:
    """Quantise an f32/f16 GGUF with llama.cpp's own quantiser (``llama_model_quantize``)."""
    ftype = FTYPES[check_outtype(outtype)]
    r = _child(_QUANTIZE, [str(src), str(dst), str(ftype), str(threads)], timeout)
    if r.returncode != 0 or not Path(dst).is_file() or Path(dst).stat().st_size == 0:
        raise LlamaCppError(f"llama.cpp could not quantise {src} to {outtype}: {error_lines(r.stderr + r.stdout)}")


def check_loads(path: str | os.PathLike, timeout: float = 600) -> None:
    """Load ``path`` in llama.cpp and run two tokens through it (in a child process); raise with llama.cpp's message."""
    r = _child(_CHECK, [str(path)], timeout)
    if r.returncode != 0 or "loaded" not in r.stdout:
        raise LlamaCppError(f"llama.cpp cannot load the GGUF: {error_lines(r.stderr + r.stdout)}")


# -- in-process use -----------------------------------------------------------------------------------
def open_model(path: str | os.PathLike, n_ctx: int = 512, threads: int | None = None, f32_kv: bool = False,
               logits_all: bool = False, n_batch: int = 512, flash_attn: bool = False) -> Any:
    """A ``llama_cpp.Llama`` on ``path`` (CPU, quiet). ``f32_kv``: f32 K/V cache (exact comparisons).

    ``flash_attn``: llama.cpp's own tools default to it where the backend has it (the CPU does);
    llama-cpp-python turns it off unless asked. Without it llama.cpp pads the V cache of every layer to
    the widest layer's, which taxes per-layer KV-head counts.
    """
    llama_cpp = require()
    t = threads or default_threads()
    kv = dict(type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32) if f32_kv else {}
    b = min(n_batch, n_ctx)
    try:
        return llama_cpp.Llama(str(path), n_ctx=n_ctx, n_batch=b, n_ubatch=b, n_threads=t, n_threads_batch=t,
                               logits_all=logits_all, flash_attn=flash_attn, verbose=False, **kv)
    except ValueError as e:
        raise LlamaCppError(f"llama.cpp cannot load {path}: {e}; run nas_llm.model.llamacpp.check_loads for its log") from e


def logits(llm: Any, ids: Sequence[int]) -> np.ndarray:
    """``[len(ids), vocab]`` float32 logits of a fresh sequence (``llm`` opened with ``logits_all=True``)."""
    if not getattr(llm, "_logits_all", False):
        raise ConfigError("open the model with logits_all=True to read every position's logits")
    if len(ids) > llm.n_ctx():
        raise ConfigError(f"{len(ids)} tokens do not fit the context of {llm.n_ctx()}; open the model with a larger n_ctx")
    llm.reset()
    llm.eval(list(map(int, ids)))
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def greedy(llm: Any, prompt: Sequence[int], n: int) -> list[int]:
    """``n`` greedy (argmax) continuation tokens of ``prompt``; needs ``logits_all=True``."""
    llm.reset()
    llm.eval(list(map(int, prompt)))
    out: list[int] = []
    for _ in range(n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(tok)
        llm.eval([tok])
    return out


def nll(llm: Any, windows: Iterable[Sequence[int]]) -> tuple[float, int]:
    """Summed next-token negative log-likelihood (float64) and the number of predicted tokens over ``windows``."""
    total, count = 0.0, 0
    for w in windows:
        w = list(map(int, w))
        lg = logits(llm, w)[:-1].astype(np.float64)
        lse = np.log(np.exp(lg - lg.max(1, keepdims=True)).sum(1)) + lg.max(1)
        total += float((lse - lg[np.arange(len(w) - 1), w[1:]]).sum())
        count += len(w) - 1
    return total, count


def perplexity(llm: Any, windows: Iterable[Sequence[int]]) -> float:
    """Perplexity over the windows (each scored from scratch, as the PyTorch objective does)."""
    total, count = nll(llm, windows)
    return float(np.exp(total / max(count, 1)))


# -- timing ---------------------------------------------------------------------------------------------
def time_prefill(llm: Any, ids: Sequence[int]) -> float:
    """Seconds to process ``ids`` as one prompt from an empty cache."""
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(list(ids))
    return time.perf_counter() - t0


def time_decode(llm: Any, prompt: Sequence[int], tokens: Sequence[int]) -> float:
    """Seconds per token to decode ``tokens`` one at a time after ``prompt`` (the prompt is not timed)."""
    llm.reset()
    llm.eval(list(prompt))
    t0 = time.perf_counter()
    for tok in tokens:
        llm.eval([int(tok)])
    return (time.perf_counter() - t0) / max(1, len(tokens))


def generate(llm: Any, prompt: str, n_tokens: int = 32) -> tuple[str, float]:
    """Greedy text after ``prompt`` (up to the first end-of-sequence token) and the decode speed in
    tokens/s over all ``n_tokens`` steps (the prompt excluded; steps after an end token are still timed)."""
    ids = llm.tokenize(prompt.encode(), add_bos=True)
    llm.reset()
    llm.eval(ids)
    out: list[int] = []
    t0 = time.perf_counter()
    for _ in range(n_tokens):
        tok = int(llm.sample(top_k=1, temp=0.0))
        out.append(tok)
        llm.eval([tok])
    dt = time.perf_counter() - t0
    eos = llm.token_eos()
    text = out[: out.index(eos)] if eos in out else out
    return llm.detokenize(text).decode("utf-8", errors="replace"), n_tokens / dt if dt > 0 else float("nan")


def version() -> str:
    return str(getattr(require(), "__version__", "?"))


__all__ = ["FTYPES", "INSTALL_HINT", "LlamaCppError", "OUTTYPES", "check_loads", "check_outtype", "default_threads",
           "error_lines", "generate", "greedy", "logits", "nll", "open_model", "perplexity", "quantize", "require",
           "time_decode", "time_prefill", "version"]

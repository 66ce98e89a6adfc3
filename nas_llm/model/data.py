"""Text for calibration and evaluation: a text file, a bundled WikiText-2/PTB split, or an HF dataset.

Calibration draws ``n_samples`` random windows of ``seq_len`` tokens with a seed (GPTQ-style);
evaluation uses consecutive non-overlapping windows from the start of the text.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import torch

from nas_llm.errors import ConfigError

# Bundled names resolve inside the data folder (``$NAS_LLM_DATA`` or ``../shared/data``).
DATASETS = {
    "wikitext2": "wikitext2/wiki.valid.txt",
    "wikitext2-valid": "wikitext2/wiki.valid.txt",
    "wikitext2-test": "wikitext2/wiki.test.txt",
    "ptb": "ptb/ptb.valid.txt",
    "ptb-valid": "ptb/ptb.valid.txt",
    "ptb-test": "ptb/ptb.test.txt",
}
DEFAULT_CALIBRATION = "wikitext2-valid"


def data_dir() -> Path:
    """``$NAS_LLM_DATA``, else the first ``shared/data`` found beside the repo or the cwd's parents."""
    env = os.environ.get("NAS_LLM_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    for base in (here, Path.cwd(), *Path.cwd().parents, *here.parents):
        for cand in (base / "shared" / "data", base.parent / "shared" / "data"):
            if (cand / "MANIFEST.md").is_file() or (cand / "wikitext2").is_dir():
                return cand
    return here.parent / "shared" / "data"


def resolve_source(source: str | os.PathLike) -> Path | str:
    """A file path for bundled names and files; an ``hf:NAME[:CONFIG]:SPLIT`` string is passed through."""
    s = str(source)
    if s in DATASETS:
        p = data_dir() / DATASETS[s]
        if not p.is_file():
            raise FileNotFoundError(f"bundled dataset {s!r} expected at {p}; set NAS_LLM_DATA to the folder holding wikitext2/ and ptb/")
        return p
    if s.startswith("hf:"):
        return s
    p = Path(s).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"text source {s!r} is not a file, a bundled name ({', '.join(DATASETS)}) or hf:NAME[:CONFIG]:SPLIT")
    return p


def load_text(source: str | os.PathLike) -> str:
    src = resolve_source(source)
    if isinstance(src, Path):
        return src.read_text(encoding="utf-8")
    parts = src[3:].split(":")
    if len(parts) not in (2, 3):
        raise ConfigError(f"HF dataset source must be hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT, got {src!r}")
    import datasets  # only with network or a local HF cache

    name, cfg, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    ds = datasets.load_dataset(name, cfg, split=split)
    col = "text" if "text" in ds.column_names else ds.column_names[0]
    return "\n\n".join(ds[col])


@lru_cache(maxsize=8)
def _tokens_cached(source: str, tok_key: int, tokenizer) -> torch.Tensor:
    text = load_text(source)
    return torch.tensor(tokenizer(text, return_tensors=None)["input_ids"], dtype=torch.long)


def tokenize(tokenizer, source: str | os.PathLike) -> torch.Tensor:
    """The whole text as one 1-D token tensor (cached per source and tokenizer)."""
    return _tokens_cached(str(source), id(tokenizer), tokenizer)


def calibration_batch(tokenizer, source: str | os.PathLike = DEFAULT_CALIBRATION, n_samples: int = 32, seq_len: int = 256, seed: int = 0) -> torch.Tensor:
    """``[n_samples, seq_len]`` random windows, deterministic in ``seed``."""
    if n_samples < 1 or seq_len < 2:
        raise ConfigError(f"n_samples must be >= 1 and seq_len >= 2, got {n_samples}, {seq_len}")
    ids = tokenize(tokenizer, source)
    if ids.numel() < n_samples * seq_len:
        raise ConfigError(f"{source} has {ids.numel()} tokens, fewer than n_samples x seq_len = {n_samples} x {seq_len}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len, (n_samples,), generator=g)
    return torch.stack([ids[s : s + seq_len] for s in starts.tolist()])


def eval_windows(tokenizer, source: str | os.PathLike, seq_len: int = 2048, max_windows: int | None = None) -> torch.Tensor:
    """Consecutive non-overlapping ``[n, seq_len]`` windows from the start (the GPTQ/Wanda/FLAP protocol)."""
    ids = tokenize(tokenizer, source)
    n = ids.numel() // seq_len
    if max_windows is not None:
        n = min(n, max_windows)
    if n < 1:
        raise ConfigError(f"{source} has {ids.numel()} tokens, fewer than one window of {seq_len}")
    return ids[: n * seq_len].view(n, seq_len)

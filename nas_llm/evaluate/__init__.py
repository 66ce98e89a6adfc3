"""``nas-llm evaluate DIR``: test perplexity (WikiText-2, PTB) and zero-shot accuracy of a model, offline.

Perplexity uses the GPTQ/Wanda/FLAP protocol (consecutive non-overlapping windows of the *test* split).
Zero-shot accuracy runs lm-eval's ``HFLM`` on the already loaded model with the task YAMLs shipped in
:mod:`nas_llm.evaluate.tasks`, which read local files; ``HF_DATASETS_OFFLINE``/``HF_HUB_OFFLINE`` are set so a
missing file fails loudly instead of silently downloading. Results go to ``DIR/eval.json``, which
``nas-llm report`` picks up.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nas_llm.errors import ConfigError
from nas_llm.model.atomic import atomic_write_text
from .tasks import ALL_TASKS, TASKS, parse_tasks, prepare

EVAL_FILE = "eval.json"
DEFAULT_PPL = ("wikitext2-test", "ptb-test")


def go_offline() -> None:
    """Make HF datasets/hub refuse the network, also when they were imported before this call."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    if "datasets" in sys.modules:
        import datasets.config as dcfg

        dcfg.HF_DATASETS_OFFLINE = True
        if hasattr(dcfg, "HF_HUB_OFFLINE"):
            dcfg.HF_HUB_OFFLINE = True
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.constants as hc

        hc.HF_HUB_OFFLINE = True


def _max_positions(model) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


@torch.no_grad()
def perplexities(model, tokenizer, sources: list[str] | tuple[str, ...] = DEFAULT_PPL, seq_len: int = 2048,
                 max_windows: int | None = None, batch_size: int = 4) -> dict[str, dict[str, Any]]:
    """Perplexity per text source over ``[n, seq_len]`` windows; ``max_windows`` caps n (for quick runs)."""
    from tqdm.auto import tqdm

    from nas_llm.model.data import eval_windows
    from nas_llm.model.metrics import nll_sum

    limit = _max_positions(model)
    if limit is not None and seq_len > limit:
        raise ConfigError(f"--seq-len {seq_len} exceeds the model's max_position_embeddings {limit}; use --seq-len <= {limit}")
    out: dict[str, dict[str, Any]] = {}
    for src in sources:
        ids = eval_windows(tokenizer, src, seq_len=seq_len, max_windows=max_windows)
        total, count = 0.0, 0
        for i in tqdm(range(0, ids.shape[0], batch_size), desc=f"ppl {src}", unit="batch", leave=False):
            t, c = nll_sum(model, ids[i : i + batch_size], batch_size=batch_size)
            total, count = total + t, count + c
        out[str(src)] = {"ppl": math.exp(total / count), "seq_len": seq_len, "windows": int(ids.shape[0]), "tokens": count}
    return out


def zeroshot(model, tokenizer, tasks: list[str] | str | None = None, limit: int | float | None = None,
             data_dir: str | Path | None = None, batch_size: int = 8, shared_prefix: bool = True) -> dict[str, dict[str, Any]]:
    """Zero-shot accuracy via lm-eval on the local task files: ``{task: {acc, acc_stderr, acc_norm?, n}}``.

    ``shared_prefix`` scores the answer choices of one question on a single forward of their shared
    context (:class:`nas_llm.evaluate.shared_prefix_lm.SharedPrefixLM`); ``False`` uses lm-eval's plain ``HFLM``.
    """
    go_offline()
    names = parse_tasks(tasks)
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from .shared_prefix_lm import make_lm

    for name in ("lm_eval", "lm-eval"):  # lm-eval logs every request batch at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    device = str(next(model.parameters()).device)
    with tempfile.TemporaryDirectory(prefix="nasllm-tasks-") as work:
        prepare(work, data_dir=data_dir, tasks=names)
        tm = TaskManager(include_path=work, include_defaults=False)
        lm = make_lm(model, tokenizer, batch_size=batch_size, device=device, shared_prefix=shared_prefix)
        res = simple_evaluate(model=lm, tasks=[TASKS[n][0] for n in names], task_manager=tm, limit=limit,
                              log_samples=False, bootstrap_iters=1000, verbosity="WARNING")
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        r = res["results"][TASKS[n][0]]
        row: dict[str, Any] = {}
        for metric in ("acc", "acc_norm"):
            if f"{metric},none" in r:
                row[metric] = float(r[f"{metric},none"])
                se = r.get(f"{metric}_stderr,none")
                row[f"{metric}_stderr"] = float(se) if isinstance(se, (int, float)) else None
        ns = res.get("n-samples", {}).get(TASKS[n][0], {})
        row["n"] = int(ns.get("effective", ns.get("original", 0)))
        row["metric"] = TASKS[n][2]
        out[n] = row
    return out


def mean_accuracy(zs: dict[str, dict[str, Any]]) -> float | None:
    """Mean of each task's headline metric (acc_norm where standard, else acc)."""
    vals = [r[r["metric"]] for r in zs.values() if r.get(r.get("metric", ""), None) is not None]
    return sum(vals) / len(vals) if vals else None


def evaluate(model, tokenizer, *, ppl_sources: list[str] | tuple[str, ...] = DEFAULT_PPL, seq_len: int = 2048,
             max_windows: int | None = None, tasks: list[str] | str | None = "all", limit: int | float | None = None,
             data_dir: str | Path | None = None, batch_size: int = 8) -> dict[str, Any]:
    """Perplexity and zero-shot results of a loaded model as one JSON-able dict (the ``eval.json`` schema)."""
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "params": int(sum(p.numel() for p in model.parameters())),
        "perplexity": perplexities(model, tokenizer, ppl_sources, seq_len, max_windows, batch_size=max(1, batch_size // 2)) if ppl_sources else {},
        "zeroshot": zeroshot(model, tokenizer, tasks, limit, data_dir, batch_size) if tasks else {},
        "limit": limit,
    }
    result["zeroshot_mean"] = mean_accuracy(result["zeroshot"])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def format_result(res: dict[str, Any]) -> str:
    lines = [f"params {res.get('params', 0):,}"]
    for src, r in res.get("perplexity", {}).items():
        lines.append(f"{src:>16} ppl {r['ppl']:.3f}  ({r['windows']} x {r['seq_len']} tokens)")
    for task, r in res.get("zeroshot", {}).items():
        parts = [f"{m} {r[m]:.4f}" for m in ("acc", "acc_norm") if m in r]
        lines.append(f"{task:>16} {'  '.join(parts)}  (n={r['n']})")
    if res.get("zeroshot_mean") is not None:
        lines.append(f"{'mean':>16} {res['zeroshot_mean']:.4f}" + (f"  (limit {res['limit']})" if res.get("limit") else ""))
    return "\n".join(lines)

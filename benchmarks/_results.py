"""Shared helpers for benchmark scripts: raw JSON beside RESULTS.md, one section per benchmark.

Each benchmark owns a section of benchmarks/RESULTS.md between markers, so scripts can be
re-run independently without clobbering each other's tables.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import platform
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "RESULTS.md"
RAW_DIR = HERE / "results"


def machine() -> dict:
    import torch
    import transformers

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        # the CPU model: hosts of the same "2 cores" class differ 2.4x in fp32 GEMM (Xeon vs EPYC), so timings need it
        "machine": f"{platform.machine()} {_cpu_model()}".strip(),
        "cpus": _nproc(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
        # code that differs from the commit makes the commit a lie: say so in the table
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", "*.py"], cwd=HERE).returncode == 1
        info["commit"] = commit + (" + uncommitted .py changes" if dirty else "")
    except OSError:
        pass
    return info


def _cpu_model() -> str:
    """'Intel(R) Xeon(R) Processor', 'AMD EPYC', ...; '' where the OS does not say."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or ""


def _nproc() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def command_line() -> str:
    return "python " + " ".join([str(Path(sys.argv[0]).as_posix())] + sys.argv[1:])


def save_raw(name: str, data: dict) -> Path:
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    path = RAW_DIR / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    text = json.dumps(data, indent=1, default=str)
    if len(text) > 1_000_000:  # rows carrying kept-index plans: compact, so raw results stay small in git
        text = json.dumps(data, separators=(",", ":"), default=str)
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md, under a file lock."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    lock = open(HERE / ".results.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = RESULTS_MD.read_text() if RESULTS_MD.exists() else "# Benchmark results\n\nEvery number below was measured by the command written next to it; raw JSON in `benchmarks/results/`.\n"
        pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        text = pat.sub(lambda _: block, text) if pat.search(text) else text.rstrip() + "\n\n" + block + "\n"
        RESULTS_MD.write_text(text)
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def header(title: str, info: dict, cmd: str) -> str:
    keys = ", ".join(f"{k} {info[k]}" for k in ("machine", "cpus", "gpu", "torch", "transformers", "commit") if k in info)
    return f"## {title}\n\n`{cmd}` — {info['date']}; {keys}\n"


def pack_plan(plan: dict) -> dict:
    """A resolved plan with each layer's kept-neuron list stored as a hex bitmask: the raw JSON of a
    table with dozens of subnets stays small in git (index lists made quality-main.json ~5 MB)."""
    layers = []
    for layer in plan.get("layers", []):
        layer = dict(layer)
        if isinstance(layer.get("neurons"), list):
            idx = layer.pop("neurons")
            layer["neurons_mask"] = hex(sum(1 << int(i) for i in idx))
        layers.append(layer)
    return {**plan, "layers": layers}


def unpack_plan(plan: dict) -> dict:
    """Inverse of :func:`pack_plan` (plans stored unpacked pass through)."""
    layers = []
    for layer in plan.get("layers", []):
        layer = dict(layer)
        if "neurons_mask" in layer:
            m = int(layer.pop("neurons_mask"), 16)
            layer["neurons"] = [i for i in range(m.bit_length()) if m >> i & 1]
        layers.append(layer)
    return {**plan, "layers": layers}

"""Leak or allocator? Run an 80 % search in-process (``s80m-1``'s command, the table from the cache) and every
20 s log the process's VmRSS next to the bytes of the torch storages Python can still reach (``gc``; shared storages
counted once) and the most common tensor shapes. Live bytes growing with RSS is a leak (the shapes name it);
flat live bytes under a growing RSS is the allocator keeping freed memory.

    NAS_LLM_CACHE=... python benchmarks/experiments/memory/2_census.py LOG RUN_DIR [SEARCH FLAGS...]
"""
from __future__ import annotations

import collections
import gc
import shlex
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from nas_llm.cli import build_parser  # noqa: E402
from nas_llm.search.config import SearchConfig  # noqa: E402
from nas_llm.search.runner import run_search  # noqa: E402


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return -1


def census() -> tuple[int, int, list]:
    seen, total, shapes = set(), 0, collections.Counter()
    n = 0
    for o in gc.get_objects():
        try:
            if not isinstance(o, torch.Tensor):
                continue
            st = o.untyped_storage()
        except Exception:
            continue
        n += 1
        shapes[(str(o.dtype).replace("torch.", ""), tuple(o.shape))] += 1
        if st.data_ptr() in seen:
            continue
        seen.add(st.data_ptr())
        total += st.nbytes()
    big = sorted(shapes.items(), key=lambda kv: -kv[1] * max(1, int(torch.tensor(kv[0][1]).prod()) if kv[0][1] else 1))[:4]
    return n, total, big


def main() -> None:
    log, run_dir, flags = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    argv = ["search", "--out", run_dir, *flags]
    config = SearchConfig.from_args(build_parser(argv).parse_args(argv)).validate()
    stop = threading.Event()
    t0 = time.time()

    def sample() -> None:
        with log.open("a") as f:
            while not stop.wait(20):
                n, live, big = census()
                rows = sum(1 for _ in open(Path(run_dir) / "evaluations.jsonl")) if (Path(run_dir) / "evaluations.jsonl").is_file() else 0
                f.write(f"{time.time() - t0:7.0f} s rss {rss_kb() / 2**20:6.2f} GB live {live / 2**30:6.2f} GB "
                        f"tensors {n} rows {rows} top {big}\n")
                f.flush()

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        run_search(config)
    finally:
        stop.set()
        th.join()


if __name__ == "__main__":
    main()

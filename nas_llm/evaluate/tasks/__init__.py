"""lm-eval task configs for the seven local zero-shot sets (PIQA, ARC-e/c, BoolQ, WinoGrande, OpenBookQA, HellaSwag-1000).

The shipped YAMLs are templates: lm-eval's ``json`` loader needs absolute data paths, which are only known
at run time, so :func:`prepare` writes filled-in copies (and PIQA's questions joined with their separate
label file) into a folder that is handed to ``lm_eval.tasks.TaskManager(include_path=...)``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from nas_llm.errors import ConfigError

HERE = Path(__file__).resolve().parent

# short name -> (lm-eval task name, data files it reads, metric reported as "accuracy" in tables)
TASKS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "piqa": ("nasllm_piqa", ("piqa_valid.jsonl", "piqa_valid-labels.lst"), "acc_norm"),
    "arc_easy": ("nasllm_arc_easy", ("arc_easy.jsonl",), "acc_norm"),
    "arc_challenge": ("nasllm_arc_challenge", ("arc_challenge.jsonl",), "acc_norm"),
    "boolq": ("nasllm_boolq", ("boolq.jsonl",), "acc"),
    "winogrande": ("nasllm_winogrande", ("winogrande.jsonl",), "acc"),
    "openbookqa": ("nasllm_openbookqa", ("openbook_qa.jsonl",), "acc_norm"),
    "hellaswag": ("nasllm_hellaswag", ("hellaswag_val_1000.jsonl",), "acc_norm"),
}
ALL_TASKS = list(TASKS)


def default_data_dir() -> Path:
    from nas_llm.model.data import data_dir

    return data_dir() / "zeroshot"


def parse_tasks(spec: str | list[str] | None) -> list[str]:
    """``"all"``/None -> every task; else comma-separated short names (``nasllm_`` prefix allowed)."""
    if spec is None or spec == "all" or spec == ["all"]:
        return list(ALL_TASKS)
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out = []
    for n in names:
        short = n[len("nasllm_"):] if n.startswith("nasllm_") else n
        if short not in TASKS:
            raise ConfigError(f"unknown zero-shot task {n!r}; choose from {', '.join(ALL_TASKS)} or 'all'")
        out.append(short)
    if not out:
        raise ConfigError(f"no zero-shot task given; choose from {', '.join(ALL_TASKS)} or 'all'")
    return out


def _write_piqa(src: Path, work: Path) -> None:
    questions = [json.loads(line) for line in (src / "piqa_valid.jsonl").read_text().splitlines() if line.strip()]
    labels = [line.strip() for line in (src / "piqa_valid-labels.lst").read_text().splitlines() if line.strip()]
    if len(questions) != len(labels):
        raise ConfigError(f"{src}/piqa_valid.jsonl has {len(questions)} items but piqa_valid-labels.lst has {len(labels)} labels")
    with open(work / "piqa_valid_labeled.jsonl", "w") as f:
        for q, lab in zip(questions, labels):
            f.write(json.dumps({**q, "label": int(lab)}) + "\n")


def prepare(work_dir: str | Path, data_dir: str | Path | None = None, tasks: list[str] | None = None) -> Path:
    """Write ready-to-use task YAMLs for ``tasks`` (default all) into ``work_dir``; returns it.

    Raises FileNotFoundError naming the missing file when a data file is absent.
    """
    src = Path(data_dir).expanduser().resolve() if data_dir is not None else default_data_dir().resolve()
    work = Path(work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for p in (src, work):
        if any(c in str(p) for c in '"\\\n'):
            raise ConfigError(f"path {p} contains a quote, backslash or newline, which the task YAMLs cannot hold")
    shutil.copy2(HERE / "utils.py", work / "utils.py")
    for short in tasks or ALL_TASKS:
        name, files, _ = TASKS[short]
        for fname in files:
            if not (src / fname).is_file():
                raise FileNotFoundError(f"zero-shot task {short!r} needs {src / fname}; pass --data-dir (the folder holding {fname})")
        if short == "piqa":
            _write_piqa(src, work)
        text = (HERE / f"{name}.yaml").read_text()
        (work / f"{name}.yaml").write_text(text.replace("{data_dir}", src.as_posix()).replace("{work_dir}", work.as_posix()))
    return work


__all__ = ["ALL_TASKS", "TASKS", "default_data_dir", "parse_tasks", "prepare"]

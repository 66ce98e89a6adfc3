"""Deploy one point of a run (``nas-llm export runs/NAME --pick ID|knee --out DIR``) as a smaller HF model folder,
or as one GGUF file llama.cpp runs (``--format gguf --out FILE.gguf``, :func:`export_pick_gguf`).

The folder holds safetensors weights loadable by stock transformers classes (``nas_llm.load_subnet``),
the tokenizer, ``subnet.json`` (the subnet, its plan, the run's measured values) and a README model card.
When the run was reformed (``run.json["reform"]``) the reformed weights are exported, reproduced by
``nas_llm.model.reform.reform_for_run``; otherwise the dense weights are sliced. Writing goes through
``nas_llm.model.export.export`` (temp folder + rename), so a failure leaves nothing half-written.
"""
from __future__ import annotations

import datetime as _dt
import shlex
import warnings
from pathlib import Path
from typing import Any

import torch.nn as nn

from nas_llm.errors import ConfigError, RunFolderError
from nas_llm.model.atomic import atomic_write_text
from nas_llm.model.export import (SUBNET_FILE, ExportError, check_export_target, export, is_subnet_dir,  # noqa: F401
                                  load_subnet)
from nas_llm.run import EXPORTS_FILE, Run
from nas_llm.select import Selection, label, pick



def build_model(run: Run, sel: Selection, model: nn.Module | None = None, tokenizer: Any = None) -> tuple[nn.Module, Any, bool]:
    """``(sliced model, tokenizer, reformed?)`` for the chosen row; loads the run's model unless given."""
    from search_spaces import Subnet

    from nas_llm.model.loading import load_model
    from nas_llm.model.slicing import slice_model

    settings = run.settings()
    if model is None:
        if "model" not in settings:
            raise ConfigError(f"{run.settings_file} has no 'model'; cannot tell which model to slice")
        model, tokenizer = load_model(settings["model"])
    run.check_model(model)
    subnet = Subnet.from_json(sel.row["subnet"])
    if settings.get("reform"):
        from nas_llm.reform import reform_for_run

        return reform_for_run(run.path, subnet, model, tokenizer), tokenizer, True
    plan = run.ranking().resolve(subnet)
    return slice_model(model, plan, subnet=subnet), tokenizer, False


def _num(v: Any, fmt: str = ".4g") -> str:
    try:
        return format(float(v), fmt)
    except (TypeError, ValueError):
        return str(v)


def _ppl_data(settings: dict, cal: dict) -> str:
    a = (settings.get("objective_args") or {}).get("perplexity") or cal
    return f"{a.get('source', '?')}, {a.get('n_samples', '?')} x {a.get('seq_len', '?')} tokens"


def model_card(run: Run, sel: Selection, reformed: bool, params: int, command: str) -> str:
    """A short README: where the model came from and what was measured (nothing that was not)."""
    from search_spaces import Subnet

    settings = run.settings()
    r = sel.row
    subnet = Subnet.from_json(r["subnet"])
    rows = []
    for n in sel.objectives.names:
        unref = r.get(f"{n}_unreformed")
        extra = f" (before reformation {_num(unref)})" if reformed and unref is not None and _num(unref) != _num(r[n]) else ""
        rows.append(f"| {label(n, sel.objectives)} | {_num(r[n])}{extra} |")
    cal = settings.get("calibration") or {}
    lines = [
        f"# {Path(str(settings.get('model', 'model'))).name} subnet {sel.id} (nas-llm)",
        "",
        f"A structurally pruned version of `{settings.get('model', '?')}` found by a nas-llm search "
        f"(run `{run.path}`, row id {sel.id}, source `{r.get('source', '?')}`), chosen because: {sel.reason}.",
        "",
        "Loads with stock `transformers` classes through `nas_llm.load_subnet(DIR)` or `nas_llm.load_model(DIR)` "
        "(per-layer head/MLP widths are recorded in `config.json`).",
        "",
        "| value | during the search |",
        "|---|---|",
        *rows,
        f"| decoder params ratio | {_num(r.get('params_ratio'))} |",
        f"| parameters (whole model) | {params:,} |",
        f"| weights | {'reformed (' + str((settings.get('reform') or {}).get('method', 'admm')) + ')' if reformed else 'sliced from the dense model, not reformed'} |",
        "",
        f"Structure: {subnet.summary()}.",
        "",
        "Per layer (KV groups [x query heads per group, where cut] / MLP neurons, `x` = dropped): " + " ".join(c.label() for c in subnet.layers),
        "",
        f"Importance calibration: {cal.get('source', '?')} ({cal.get('n_samples', '?')} x {cal.get('seq_len', '?')} tokens). "
        f"Perplexity in this table: {_ppl_data(settings, cal)}, i.e. a calibration split, not a test set; "
        "run `nas-llm evaluate DIR` for test-set perplexity and zero-shot accuracy (written to `eval.json`).",
        "",
        f"Exported {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} with:",
        "",
        "```",
        command,
        "```",
        "",
    ]
    return "\n".join(lines)


def export_pick(run: Run | str | Path, spec: str | int, out: str | Path, overwrite: bool = False, model: nn.Module | None = None,
                tokenizer: Any = None, command: str | None = None, materialize: bool = False) -> Path:
    """Python entry point: export row ``spec`` (id or 'knee') of ``run`` to ``out``; returns the folder.

    ``materialize``: for a run reformed with ``--method flexi``, write every replacement block in full (a
    stock model transformers loads) instead of the compact form (shared weights once, ``load_subnet`` only).
    """
    run = run if isinstance(run, Run) else Run(run)
    run.require()
    out = Path(out)
    method = (run.settings().get("reform") or {}).get("method")
    if materialize and method != "flexi":
        raise ConfigError(f"--materialize applies to runs reformed with --method flexi; {run.path} was "
                          f"{'reformed with ' + method if method else 'not reformed'}, so its export is already a plain model")
    check_export_target(out, overwrite)  # fail before minutes of slicing/reforming; never replaces a non-export
    sel = pick(run, spec)
    command = command or f"nas-llm export {shlex.quote(str(run.path))} --pick {spec} --out {shlex.quote(str(out))}"
    sliced, tok, reformed = build_model(run, sel, model, tokenizer)
    if materialize:  # a row reform left unreformed (it drops no layer) is a plain sliced model already
        from nas_llm.model.shared_block import materialize as materialized, replacements

        sliced = materialized(sliced) if replacements(sliced) else sliced
    params = int(sum(p.numel() for p in sliced.parameters()))
    meta = provenance(run, sel, reformed, command)
    card = model_card(run, sel, reformed, params, command)
    path = export(sliced, out, tok, overwrite=overwrite, extra_files={"README.md": card}, metadata=meta)
    _record(run, sel.id, path, reformed)
    return path


def _record(run: Run, row_id: int, path: Path, reformed: bool) -> None:
    try:
        with run.lock():
            record_export(run, row_id, path, reformed)
    except RunFolderError as e:  # a search is writing the folder: the export itself is done and fine
        warnings.warn(f"exported to {path}, but not recorded in {run.path / EXPORTS_FILE} ({e}); "
                      f"`nas-llm report` will not list its evaluation", UserWarning)


def provenance(run: Run, sel: Selection, reformed: bool, command: str) -> dict[str, Any]:
    """Where an exported model came from and what the search measured for it (subnet.json, GGUF metadata)."""
    return {"run": str(run.path), "id": sel.id, "source": str(sel.row.get("source", "")), "rule": sel.rule, "reason": sel.reason,
            "reformed": reformed, "objectives": {n: float(sel.row[n]) for n in sel.objectives.names},
            "objectives_unreformed": {n: float(sel.row[f"{n}_unreformed"]) for n in sel.objectives.names if f"{n}_unreformed" in sel.row},
            "params_ratio": float(sel.row["params_ratio"]) if "params_ratio" in sel.row else None, "command": command,
            "search_model": str(run.settings().get("model", ""))}


def export_pick_gguf(run: Run | str | Path, spec: str | int, out: str | Path, outtype: str = "f32", overwrite: bool = False,
                     model: nn.Module | None = None, tokenizer: Any = None, command: str | None = None, check: bool = True,
                     tokenizer_pre: str | None = None) -> Path:
    """Export row ``spec`` (id or 'knee') of ``run`` as one GGUF file llama.cpp runs; returns the file.

    The subnet (reformed when the run was) goes through :func:`nas_llm.model.gguf.export_gguf`: the
    llama.cpp architecture that holds its per-layer widths, llama.cpp's quantiser for ``outtype``, a
    load check in llama.cpp before the file is renamed into place.
    """
    from nas_llm.model.gguf import GGUFError, check_gguf_target, export_gguf
    from nas_llm.model.llamacpp import LlamaCppError, check_outtype

    run = run if isinstance(run, Run) else Run(run)
    run.require()
    out = Path(out)
    try:
        check_outtype(outtype)
    except LlamaCppError as e:
        raise GGUFError(str(e)) from None
    check_gguf_target(out, overwrite)  # fail before minutes of slicing/reforming; never replaces a non-GGUF file
    sel = pick(run, spec)
    command = command or (f"nas-llm export {shlex.quote(str(run.path))} --pick {spec} --format gguf --type {outtype} "
                          f"--out {shlex.quote(str(out))}")
    sliced, tok, reformed = build_model(run, sel, model, tokenizer)
    name = f"{Path(str(run.settings().get('model', 'model'))).name} nas-llm subnet {sel.id}"
    path = export_gguf(sliced, out, tok, outtype=outtype, overwrite=overwrite, check=check, tokenizer_pre=tokenizer_pre,
                       name=name, metadata=provenance(run, sel, reformed, command))
    _record(run, sel.id, path, reformed)
    return path


def record_export(run: Run, row_id: int, out: Path, reformed: bool) -> None:
    """Remember where row ``row_id`` was exported, so the report can show its ``eval.json`` later."""
    import json

    f = run.path / EXPORTS_FILE
    try:
        entries = json.loads(f.read_text()) if f.is_file() else []
    except json.JSONDecodeError:
        entries = []
    entries = [e for e in entries if Path(e.get("out", "")).resolve() != Path(out).resolve()]
    entries.append({"id": int(row_id), "out": str(Path(out).resolve()), "reformed": bool(reformed),
                    "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    atomic_write_text(f, json.dumps(entries, indent=1))


__all__ = ["EXPORTS_FILE", "ExportError", "build_model", "export", "export_pick", "export_pick_gguf", "load_subnet", "model_card",
           "provenance", "record_export"]

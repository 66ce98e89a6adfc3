"""Export a sliced model as safetensors + config (+ subnet.json), and rebuild it from stock classes.

Export writes into a temporary sibling folder and renames it into place, so a failure never
leaves a half-written model where the user asked for one.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from nas_llm.errors import NasLLMError
from search_spaces import get_family

from .atomic import atomic_dir
from .slicing import layer_record, mark_nonstock, resize_layer, update_config

SUBNET_FILE = "subnet.json"


class ExportError(NasLLMError, RuntimeError):
    """An export folder that cannot be written or read back."""


class ExportTargetError(NasLLMError, FileExistsError):
    """An export destination that must not be written or replaced."""


def _is_nonempty_dir(p: Path) -> bool:
    return p.is_dir() and any(p.iterdir())


def is_export_dir(path: str | Path) -> bool:
    """A folder nas-llm exported: ``subnet.json`` beside a ``config.json`` (the marker ``--overwrite`` requires)."""
    p = Path(path)
    return (p / SUBNET_FILE).is_file() and (p / "config.json").is_file()


def check_export_target(out_dir: str | Path, overwrite: bool) -> Path:
    """The resolved export folder, or an error before any work: ``overwrite`` only ever replaces a previous
    nas-llm export -- never a run folder, the current directory or one of its parents, a home, or any other folder."""
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ExportTargetError(f"{out} exists and is not a folder; choose another --out")
    if not _is_nonempty_dir(out):
        return out
    if not overwrite:
        raise ExportTargetError(f"{out} exists and is not empty; pass --overwrite (overwrite=True) to replace a previous "
                                f"nas-llm export there, or choose another --out")
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if out == cwd or out in cwd.parents or out == home or out == Path(out.anchor):
        raise ExportTargetError(f"--overwrite refuses {out}: it is the current directory, one of its parents or a home; "
                                f"export into a new folder, e.g. --out {out / 'export'}")
    if (out / "run.json").is_file():
        raise ExportTargetError(f"--overwrite refuses {out}: it is a nas-llm run folder (run.json); export into another folder")
    if not is_export_dir(out):
        listing = ", ".join(sorted(q.name for q in out.iterdir())[:5])
        raise ExportTargetError(f"--overwrite replaces only a previous nas-llm export (a folder with {SUBNET_FILE} and "
                                f"config.json); {out} is not one (it holds {listing}...). Choose another --out")
    return out


def module_shapes(model: nn.Module) -> list[tuple[int, int, int]]:
    """(query heads, KV heads, MLP neurons) of every decoder layer, read from its modules; inconsistent
    projections (e.g. sliced by hand on one side only) are an error naming the layer and the projection."""
    fam = get_family(model)
    cfg = model.config
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    out = []
    for i, layer in enumerate(fam.decoder_layers(model)):
        a, m = fam.attn_linears(layer), fam.mlp_linears(layer)
        q, kv, n = a["q"].out_features, a["k"].out_features, m["gate"].out_features
        checks = {"q_proj rows": q % hd == 0, "k_proj rows": kv % hd == 0 and kv > 0, "v_proj rows": a["v"].out_features == kv,
                  "o_proj columns": a["o"].in_features == q, "up_proj rows": m["up"].out_features == n,
                  "down_proj columns": m["down"].in_features == n, "heads per KV group": kv and (q // hd) % (kv // hd) == 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ExportError(f"layer {i}: inconsistent shapes ({', '.join(bad)}: q {q}, k {kv}, v {a['v'].out_features}, "
                              f"o in {a['o'].in_features}, gate {n}, up {m['up'].out_features}, down in {m['down'].in_features}, "
                              f"head_dim {hd}); slice every coupled projection together (nas_llm.slice_model does)")
        out.append((q // hd, kv // hd, n))
    return out


def sync_layer_record(model: nn.Module) -> None:
    """Make ``config.nas_llm["layers"]`` describe the modules as they are, so the folder always reloads.

    A model sliced by other means (by hand, another pruning tool) has no record or a stale one; the shapes
    are read from the modules and the record is (re)written. A dense or stock-uniform model is left as it is.
    """
    fam = get_family(model)
    cfg = model.config
    shapes = module_shapes(model)
    rec = layer_record(cfg)
    if rec is not None and [(r["num_attention_heads"], r["num_key_value_heads"], r["intermediate_size"]) for r in rec] == shapes:
        return
    stock = (cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads, cfg.intermediate_size)
    if rec is None and len(shapes) == cfg.num_hidden_layers and all(s == stock for s in shapes):
        return
    old = getattr(cfg, "nas_llm", None) or {}
    dims = fam.dims(cfg)
    dense = old.get("dense")
    if dense:
        dims = replace(dims, num_layers=dense["num_hidden_layers"], num_heads=dense["num_attention_heads"],
                       num_kv_heads=dense["num_key_value_heads"], intermediate=dense["intermediate_size"])
    src = [r["source_layer"] for r in rec] if rec is not None and len(rec) == len(shapes) else list(range(len(shapes)))
    layers = [{"source_layer": s, "num_attention_heads": h, "num_key_value_heads": kv, "intermediate_size": n}
              for s, (h, kv, n) in zip(src, shapes)]
    extra = {k: v for k, v in old.items() if k not in ("format", "dense", "layers")}
    update_config(cfg, fam, dims, layers, {**extra, "layers_from_modules": True})
    if old.get("nonstock"):
        mark_nonstock(cfg)


def export(model: nn.Module, out_dir: str | Path, tokenizer: Any = None, overwrite: bool = False,
           extra_files: dict[str, str] | None = None, metadata: dict | None = None) -> Path:
    """Write ``model`` (sliced or dense) to ``out_dir``; returns the folder.

    ``extra_files``: name -> text written beside the weights (model card, ...).
    ``metadata``: merged into ``subnet.json`` (objective values, command, ...).
    """
    out = check_export_target(out_dir, overwrite)
    sync_layer_record(model)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        plan = getattr(model, "_nas_llm_plan", None)
        rec = getattr(model.config, "nas_llm", None) or {}
        info = {"format": rec.get("format", 1), "subnet": rec.get("subnet"), "layers": rec.get("layers"),
                "plan": None if plan is None else plan.to_dict(),
                "params": int(sum(p.numel() for p in model.parameters())), **(metadata or {})}
        (tmp / SUBNET_FILE).write_text(json.dumps(info, indent=1))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return out


def is_subnet_dir(path: str | Path) -> bool:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return bool(json.loads(cfg.read_text()).get("nas_llm"))
    except json.JSONDecodeError:
        return False


def _weight_files(d: Path) -> list[Path]:
    index = d / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [d / n for n in names]
    else:
        files = [d / "model.safetensors"]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"weight file missing: {f}")
    return files


def _add_missing_biases(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give a Linear a bias slot when the file has one its stock class lacks (FLAP-style bias compensation)."""
    modules = dict(model.named_modules())
    for key, t in state.items():
        if key.endswith(".bias"):
            mod = modules.get(key[: -len(".bias")])
            if isinstance(mod, nn.Linear) and mod.bias is None:
                mod.bias = nn.Parameter(torch.empty(t.shape, dtype=mod.weight.dtype, device="meta"))


def load_subnet(path: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild an exported subnet with stock transformers classes (no pickle, no remote code)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    d = Path(path).expanduser()
    if not (d / "config.json").is_file():
        raise FileNotFoundError(f"{d} has no config.json; is it a nas-llm export folder?")
    files = _weight_files(d)
    config = AutoConfig.from_pretrained(str(d))
    layers = layer_record(config)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    fam = get_family(model)
    if layers is not None:
        dims = fam.dims(model)
        for layer, r in zip(fam.decoder_layers(model), layers):
            resize_layer(layer, fam, dims, r["num_key_value_heads"], r["intermediate_size"], heads=r["num_attention_heads"])
    flexi = (getattr(config, "nas_llm", None) or {}).get("flexi")
    if flexi:  # FlexiGPT's compact form: replacement maps that share another block's weights
        from .shared_block import rebuild

        rebuild(model, flexi["replaced"])
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as e:  # safetensors raises several types for truncated/garbled files
            raise ExportError(f"corrupt weight file {f}: {e}") from e
    _add_missing_biases(model, state)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = {k for k in missing if getattr(config, "tie_word_embeddings", False) and k.endswith("lm_head.weight")}
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ExportError(f"weights in {d} do not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if tied:
        model.tie_weights()
    meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if meta:
        raise ExportError(f"weights in {d} lack tensors for {meta[:5]}")
    if (d / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(d))
    return model.to(dtype=dtype, device=device).eval()

"""Export a sliced model as safetensors + config (+ subnet.json), and rebuild it from stock classes.

Export writes into a temporary sibling folder and renames it into place, so a failure never
leaves a half-written model where the user asked for one.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from search_spaces import get_family

from .atomic import atomic_dir
from .slicing import layer_record, resize_layer

SUBNET_FILE = "subnet.json"


class ExportError(RuntimeError):
    """An export folder that cannot be written or read back."""


def _is_nonempty_dir(p: Path) -> bool:
    return p.is_dir() and any(p.iterdir())


def export(model: nn.Module, out_dir: str | Path, tokenizer: Any = None, overwrite: bool = False,
           extra_files: dict[str, str] | None = None, metadata: dict | None = None) -> Path:
    """Write ``model`` (sliced or dense) to ``out_dir``; returns the folder.

    ``extra_files``: name -> text written beside the weights (model card, ...).
    ``metadata``: merged into ``subnet.json`` (objective values, command, ...).
    """
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if _is_nonempty_dir(out) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty; pass overwrite=True (CLI: --overwrite) to replace it")
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
        dims = fam.dims(config)
        for layer, r in zip(fam.decoder_layers(model), layers):
            resize_layer(layer, fam, dims, r["num_key_value_heads"], r["intermediate_size"])
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

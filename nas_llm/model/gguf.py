"""Export a (sliced, reformed) model as one GGUF file that llama.cpp, Ollama and LM Studio run.

llama.cpp reads ``{arch}.attention.head_count``, ``head_count_kv`` and ``feed_forward_length`` as a
scalar or a per-layer array for every architecture, but only some architectures build each layer
from its own counts. :data:`ARCHS` says, from llama.cpp's tensor creation and graph code, what each
one can hold; a family tries its own architecture first and a per-layer one second
(:data:`FAMILY_ARCHS`): LLaMA / Mistral / Qwen2 subnets with per-layer widths go to ``deci``
(DeciLM / Nemotron-NAS: LLaMA blocks with per-layer heads, KV heads and FFN, optional biases on every
projection), Qwen3 ones to ``openelm`` (per-layer heads with q/k norms, tied output). What no
architecture can express is refused naming the layer and the field.

The rotary layout is converted exactly as llama.cpp's ``convert_hf_to_gguf.py`` does for the
architectures that use ggml's interleaved rope (llama, deci): q/k rows (and biases) are permuted per
head, per layer with that layer's head counts. Qwen2/Qwen3/OpenELM use the NeoX rope: no permutation.

Weights are written in f32 with gguf-py, other types come from llama.cpp's own quantiser, and the
file is load-checked in llama.cpp before it is renamed into place (``atomic_path``).
"""
from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn

from search_spaces import get_family

from .atomic import atomic_path
from .gguf_vocab import GGUFError, add_tokenizer
from .llamacpp import OUTTYPES, LlamaCppError, check_loads, check_outtype, quantize
from .shared_block import materialize, replacements

SOURCE_GGUF_ATTR = "nas_llm_source_gguf"  # config attribute set by load_model for models read from a GGUF
ROLES = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass(frozen=True)
class Arch:
    """What one llama.cpp architecture can hold (read from its ``load_arch_tensors`` and graph)."""

    name: str
    per_layer: bool  # builds every layer from its own head / KV-head / FFN counts
    rotary_permute: bool  # LLAMA_ROPE_TYPE_NORM: HF's rotate-half rows must be interleaved
    biases: frozenset = frozenset()  # projections whose optional bias tensor llama.cpp creates
    head_norms: bool = False  # q/k norms (required when True, absent otherwise)
    untied_output: bool = True  # reads an output.weight separate from the embeddings
    fused_qkv: bool = False  # one attn_qkv tensor
    q_is_hidden: bool = False  # q and o are hidden x hidden


ARCHS: dict[str, Arch] = {
    "llama": Arch("llama", False, True, frozenset(ROLES)),
    "deci": Arch("deci", True, True, frozenset(ROLES)),
    "qwen2": Arch("qwen2", False, False, frozenset("qkv"), q_is_hidden=True),
    "qwen3": Arch("qwen3", False, False, frozenset("qkv"), head_norms=True),
    "openelm": Arch("openelm", True, False, head_norms=True, untied_output=False, fused_qkv=True),
}
FAMILY_ARCHS: dict[str, tuple[str, ...]] = {"llama": ("llama", "deci"), "mistral": ("llama", "deci"),
                                            "qwen2": ("qwen2", "deci"), "qwen3": ("qwen3", "openelm")}


@dataclass
class LayerShape:
    heads: int
    kv: int
    ff: int
    source: int  # the layer's index in the dense model
    biases: set = field(default_factory=set)


def layer_shapes(model: nn.Module) -> list[LayerShape]:
    """Per kept layer: heads, KV heads and FFN width read from the projections, and which carry biases."""
    fam = get_family(model)
    hd = fam.dims(model.config).head_dim
    rec = (getattr(model.config, "nas_llm", None) or {}).get("layers") or []
    out = []
    for i, layer in enumerate(fam.decoder_layers(model)):
        lin = {**fam.attn_linears(layer), **fam.mlp_linears(layer)}
        src = rec[i]["source_layer"] if i < len(rec) else i
        out.append(LayerShape(lin["q"].out_features // hd, lin["k"].out_features // hd, lin["gate"].out_features, src,
                              {r for r in ROLES if lin[r].bias is not None}))
    return out


def _tied(model: nn.Module) -> bool:
    out = model.get_output_embeddings()
    return out is None or out.weight is model.get_input_embeddings().weight


def problems(model: nn.Module, arch: Arch) -> list[str]:
    """Why ``arch`` cannot hold ``model`` (empty when it can); each names the layer and the field."""
    fam = get_family(model)
    dims = fam.dims(model.config)
    shapes = layer_shapes(model)
    out = []
    where = [f"layer {i} (dense layer {s.source})" for i, s in enumerate(shapes)]
    first = shapes[0]
    for i, s in enumerate(shapes):
        for fname, v, v0 in (("head_count", s.heads, first.heads), ("head_count_kv", s.kv, first.kv),
                             ("feed_forward_length", s.ff, first.ff)):
            if not arch.per_layer and v != v0:
                out.append(f"{where[i]}: {fname} {v} differs from layer 0's {v0}, and llama.cpp's {arch.name} "
                           "architecture builds every layer with layer 0's counts")
        if arch.q_is_hidden and s.heads * dims.head_dim != dims.hidden:
            out.append(f"{where[i]}: head_count {s.heads} x head size {dims.head_dim} != hidden size {dims.hidden}, and "
                       f"llama.cpp's {arch.name} architecture needs q/o projections of the full hidden size")
        for role in [r for r in ROLES if r in s.biases and r not in arch.biases]:
            out.append(f"{where[i]}: {role}_proj has a bias (bias compensation, or FlexiGPT's output shift with norm "
                       f"lsq/affine, adds them to o/down), which llama.cpp's {arch.name} architecture does not read; reform "
                       f"without bias compensation (FlexiGPT: norm='scale' or 'none')")
    if bool(fam.head_norms) != arch.head_norms:
        out.append(f"the model {'has' if fam.head_norms else 'lacks'} per-head q/k norms, which llama.cpp's {arch.name} "
                   f"architecture {'does not apply' if fam.head_norms else 'requires'}")
    if not arch.untied_output and not _tied(model):
        out.append(f"the output projection is not tied to the embeddings, and llama.cpp's {arch.name} architecture "
                   "always reuses the embeddings")
    return out


def choose_arch(model: nn.Module, arch: str | None = None) -> Arch:
    """The llama.cpp architecture for ``model``: ``arch`` if given (llama.cpp's load check judges it), else
    the family's own one when it can hold the subnet, else a per-layer one; otherwise a :class:`GGUFError`."""
    if arch is not None:
        if arch not in ARCHS:
            raise GGUFError(f"unknown llama.cpp architecture {arch!r}; nas-llm writes {', '.join(ARCHS)}")
        return ARCHS[arch]
    fam = get_family(model)
    if fam.name not in FAMILY_ARCHS:
        raise GGUFError(f"no GGUF architecture is known for the {fam.name!r} family; "
                        f"GGUF export supports {', '.join(FAMILY_ARCHS)}")
    reasons = []
    for name in FAMILY_ARCHS[fam.name]:
        p = problems(model, ARCHS[name])
        if not p:
            return ARCHS[name]
        reasons.append(f"{name}: {p[0]}" + (f" (and {len(p) - 1} more)" if len(p) > 1 else ""))
    raise GGUFError(f"llama.cpp cannot express this {fam.name} subnet; " + "; ".join(reasons))


# -- tensors ------------------------------------------------------------------------------------
def permute_rotary(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """HF rotate-half rows -> ggml's interleaved rope, as ``LlamaModel.permute`` in llama.cpp's converter."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()


def _name(tensor: Any, bid: int | None = None, suffix: str = "weight") -> str:
    import gguf

    return gguf.TENSOR_NAMES[tensor].format(bid=bid) + "." + suffix


def tensors(model: nn.Module, arch: Arch, permute: bool | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """``(gguf name, f32 array)`` of every tensor; ``permute=False`` skips the rotary permutation (tests)."""
    import gguf

    T = gguf.MODEL_TENSOR
    fam = get_family(model)
    if len(fam.layer_norms) != 2:
        raise GGUFError(f"the {fam.name} family has {len(fam.layer_norms)} norms per layer; GGUF export handles 2 (attention, FFN)")
    permute = arch.rotary_permute if permute is None else permute
    yield _name(T.TOKEN_EMBD), _np(model.get_input_embeddings().weight)
    for i, (layer, s) in enumerate(zip(fam.decoder_layers(model), layer_shapes(model))):
        lin = {**fam.attn_linears(layer), **fam.mlp_linears(layer)}
        w = {r: lin[r].weight for r in ROLES}
        b = {r: lin[r].bias for r in ROLES if lin[r].bias is not None}
        if permute:
            for r, n in (("q", s.heads), ("k", s.kv)):
                w[r] = permute_rotary(w[r], n)
                if r in b:
                    b[r] = permute_rotary(b[r], n)
        yield _name(T.ATTN_NORM, i), _np(getattr(layer, fam.layer_norms[0]).weight)
        if arch.fused_qkv:
            yield _name(T.ATTN_QKV, i), _np(torch.cat([w["q"], w["k"], w["v"]]))
        attn = [("q", T.ATTN_Q), ("k", T.ATTN_K), ("v", T.ATTN_V), ("o", T.ATTN_OUT)]
        for r, t in attn[3:] if arch.fused_qkv else attn:
            yield _name(t, i), _np(w[r])
        for r, t in attn:
            if r in b:
                yield _name(t, i, "bias"), _np(b[r])
        for norm, t in zip(fam.head_norms, (T.ATTN_Q_NORM, T.ATTN_K_NORM)):
            yield _name(t, i), _np(getattr(fam.attention(layer), norm).weight)
        yield _name(T.FFN_NORM, i), _np(getattr(layer, fam.layer_norms[1]).weight)
        for r, t in (("gate", T.FFN_GATE), ("up", T.FFN_UP), ("down", T.FFN_DOWN)):
            yield _name(t, i), _np(w[r])
            if r in b:
                yield _name(t, i, "bias"), _np(b[r])
    yield _name(T.OUTPUT_NORM), _np(model.get_decoder().norm.weight)
    if not _tied(model):
        yield _name(T.OUTPUT), _np(model.get_output_embeddings().weight)


# -- metadata -----------------------------------------------------------------------------------
def _rope(writer: Any, model: nn.Module, arch: Arch) -> np.ndarray | None:
    """Rope keys; returns llama.cpp's ``rope_freqs`` factors for a llama3-scaled rope (None otherwise)."""
    import gguf

    cfg = model.config
    rp = dict(getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {})
    writer.add_rope_freq_base(float(rp.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    kind = rp.get("rope_type", rp.get("type", "default")) or "default"
    if kind == "default":
        return None
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rp["factor"]))
        return None
    if kind == "llama3" and arch.name in ("llama", "deci"):
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        hd = get_family(model).dims(cfg).head_dim
        base = 1.0 / (float(rp["rope_theta"]) ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
        scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
        return (base / scaled.double()).float().numpy()  # llama.cpp divides each frequency by its factor
    raise GGUFError(f"rope scaling {kind!r} is not exported to GGUF (nas-llm writes default, linear and llama3 rope)")


def _warn_window(cfg: Any) -> None:
    window = getattr(cfg, "sliding_window", None)
    used = getattr(cfg, "use_sliding_window", True)
    if window and used and window < getattr(cfg, "max_position_embeddings", 0):
        warnings.warn(f"llama.cpp attends to the full context, not the model's sliding window of {window} tokens "
                      "(as llama.cpp's own converter does for Mistral): outputs differ beyond that length", stacklevel=3)


def _hparams(writer: Any, model: nn.Module, arch: Arch, shapes: list[LayerShape]) -> None:
    cfg = model.config
    dims = get_family(model).dims(cfg)
    one = (lambda v: v) if arch.per_layer else (lambda v: v[0])
    writer.add_context_length(int(cfg.max_position_embeddings))
    writer.add_embedding_length(dims.hidden)
    writer.add_block_count(len(shapes))
    writer.add_feed_forward_length(one([s.ff for s in shapes]))
    writer.add_head_count(one([s.heads for s in shapes]))
    writer.add_head_count_kv(one([s.kv for s in shapes]))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_key_length(dims.head_dim)
    writer.add_value_length(dims.head_dim)
    writer.add_rope_dimension_count(dims.head_dim)
    writer.add_vocab_size(dims.vocab)
    writer.add_string("nas_llm.layers", json.dumps([{"source_layer": s.source, "heads": s.heads, "kv_heads": s.kv, "ffn": s.ff}
                                                    for s in shapes]))
    _warn_window(cfg)


# -- writing ------------------------------------------------------------------------------------
def write_f32(model: nn.Module, path: str | os.PathLike, tokenizer: Any = None, *, arch: Arch, source_gguf: Any = None,
              tokenizer_pre: str | None = None, name: str | None = None, permute: bool | None = None,
              metadata: dict[str, Any] | None = None) -> None:
    """Write ``model`` as an f32 GGUF of architecture ``arch`` to ``path`` (no checks, no rename).

    ``metadata``: extra ``nas_llm.KEY`` strings (where the subnet came from); llama.cpp ignores them.
    """
    import gguf

    n_vocab = model.get_input_embeddings().weight.shape[0]
    writer = gguf.GGUFWriter(str(path), arch.name)
    writer.add_name(name or str(getattr(model.config, "_name_or_path", "") or "nas-llm subnet"))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    shapes = layer_shapes(model)
    _hparams(writer, model, arch, shapes)
    for k, v in (metadata or {}).items():
        writer.add_string(f"nas_llm.{k}", v if isinstance(v, str) else json.dumps(v))
    freqs = _rope(writer, model, arch)
    add_tokenizer(writer, n_vocab, tokenizer, source_gguf, tokenizer_pre)
    if freqs is not None:
        writer.add_tensor(_name(gguf.MODEL_TENSOR.ROPE_FREQS), freqs)
    for tname, arr in tensors(model, arch, permute):
        writer.add_tensor(tname, arr)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_arch(path: str | os.PathLike) -> str:
    """``general.architecture`` of a GGUF file."""
    import gguf

    return str(gguf.GGUFReader(str(path)).fields["general.architecture"].contents())


QK_K = 256  # llama.cpp's k-quant super-block: a k-quant row must hold a multiple of this many values
CUT_INPUTS = ("attn_output", "ffn_down")  # the maps whose rows are as long as a cut width (heads x head_dim, neurons)


def kquant_fallbacks(path: str | os.PathLike) -> dict[str, dict[int, list[str]]]:
    """Tensors of a k-quant GGUF that llama.cpp stored in a bigger legacy type because their rows are not a
    multiple of 256 (its quantiser's fallback, e.g. Q4_K -> Q5_0, Q6_K -> Q8_0), read from the file itself.

    Only the maps whose row length is a cut width (``attn_output``, ``ffn_down``) are listed: map -> row
    length -> the types it fell back to. Why it matters: a fallback tensor is 20-30 % bigger, so decode (which
    reads every weight once per token) gains less than the params cut suggests; widths in multiples of 256
    keep the k-quant. Empty for files without k-quants.
    """
    import gguf

    T = gguf.GGMLQuantizationType
    kquants = {T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K}
    reader = gguf.GGUFReader(str(path))
    ftype = reader.fields.get("general.file_type")
    try:
        name = gguf.LlamaFileType(int(ftype.contents())).name if ftype is not None else ""
    except ValueError:
        name = ""
    if "_K" not in name:  # the type asked of the quantiser (a file whose every map fell back has no k-quant tensor)
        return {}
    out: dict[str, dict[int, list[str]]] = {}
    for t in reader.tensors:
        role = t.name.split(".")[-2] if t.name.startswith("blk.") else ""
        cols = int(t.shape[0])  # gguf-py lists ne[0] (the row length) first
        if role in CUT_INPUTS and cols % QK_K and t.tensor_type not in kquants and t.tensor_type not in (T.F32, T.F16):
            types = out.setdefault(role, {}).setdefault(cols, [])
            if t.tensor_type.name not in types:
                types.append(t.tensor_type.name)
    return out


def kquant_note(path: str | os.PathLike) -> str | None:
    """One line for the user when cut widths kept a k-quant GGUF's maps out of k-quants, else None."""
    fb = kquant_fallbacks(path)
    if not fb:
        return None
    parts = [f"{role} rows of {', '.join(map(str, sorted(w)))} -> {'/'.join(sorted({t for ts in w.values() for t in ts}))}"
             for role, w in sorted(fb.items())]
    hint = (f"; a search with --granularity {QK_K} keeps MLP widths k-quant sized" if "ffn_down" in fb else "")
    return (f"note: llama.cpp stores k-quants only for rows that are multiples of {QK_K}: {'; '.join(parts)} "
            f"(20-30 % more bytes for those maps, less decode speed-up){hint}")


class GGUFTargetError(GGUFError, FileExistsError):
    """A GGUF destination that must not be written or replaced."""


def check_gguf_target(path: str | os.PathLike, overwrite: bool) -> Path:
    """The resolved output file, or an error before any work: ``overwrite`` only ever replaces a GGUF file."""
    out = Path(path).expanduser().resolve()
    if out.is_dir():
        raise GGUFTargetError(f"{out} is a folder; give the path of the .gguf file to write")
    if out.exists() and not overwrite:
        raise GGUFTargetError(f"{out} exists; pass --overwrite (overwrite=True) to replace a previous GGUF there, or choose another --out")
    if out.exists():
        with open(out, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            raise GGUFTargetError(f"--overwrite replaces only a GGUF file; {out} is not one (it does not start with 'GGUF'); "
                            f"choose another --out")
    return out


def export_gguf(model: nn.Module, path: str | os.PathLike, tokenizer: Any = None, *, outtype: str = "f32",
                overwrite: bool = False, source_gguf: str | os.PathLike | None = None, arch: str | None = None,
                check: bool = True, threads: int = 0, tokenizer_pre: str | None = None, name: str | None = None,
                metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (dense, sliced or reformed) as a GGUF llama.cpp runs; returns the file.

    ``outtype``: one of :data:`OUTTYPES` (f16 and quantised types come from llama.cpp's quantiser).
    ``source_gguf``: the GGUF the model was read from, whose tokenizer keys are copied (default: the
    one ``load_model`` recorded); otherwise the vocabulary is built from the HF ``tokenizer``.
    A FlexiGPT model (shared blocks + adapters) is materialised first (:func:`~nas_llm.model.shared_block.materialize`).
    ``arch``: force a llama.cpp architecture instead of choosing one. ``check``: load the file in
    llama.cpp before it replaces ``path``; a file llama.cpp refuses is deleted and its message raised.
    """
    try:
        check_outtype(outtype)
    except LlamaCppError as e:
        raise GGUFError(str(e)) from None
    out = check_gguf_target(path, overwrite)
    if replacements(model):  # FlexiGPT's shared blocks: llama.cpp has no weight sharing, so each replacement is written in full
        model = materialize(model)
    spec = choose_arch(model, arch)
    source = source_gguf if source_gguf is not None else getattr(model.config, SOURCE_GGUF_ATTR, None)
    if source is not None and not Path(source).is_file():
        raise FileNotFoundError(f"source GGUF {source} (whose tokenizer the export copies) is missing")
    kw = dict(arch=spec, source_gguf=source, tokenizer_pre=tokenizer_pre, name=name, metadata=metadata)
    with atomic_path(out) as tmp:
        if outtype == "f32":
            write_f32(model, tmp, tokenizer, **kw)
        else:
            fd, f32 = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.f32-")  # the quantiser's input
            os.close(fd)
            try:
                write_f32(model, f32, tokenizer, **kw)
                quantize(f32, tmp, outtype, threads)
            finally:
                Path(f32).unlink(missing_ok=True)
        if check:
            try:
                check_loads(tmp)
            except LlamaCppError as e:
                raise GGUFError(f"{e}; nothing was written to {out}") from None
    return out


__all__ = ["ARCHS", "Arch", "FAMILY_ARCHS", "GGUFError", "LayerShape", "OUTTYPES", "SOURCE_GGUF_ATTR", "choose_arch",
           "export_gguf", "kquant_fallbacks", "kquant_note", "layer_shapes", "permute_rotary", "problems", "read_arch", "tensors", "write_f32"]

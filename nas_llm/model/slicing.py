"""Cut a model to a subnet: the one slicing primitive, and the permanent use of it (``slice_model``).

:func:`layer_cuts` says which rows / columns of which projections a layer's plan keeps;
:func:`sliced_projections` builds those smaller projections (optionally with replacement weights for
the input-cut maps, e.g. reformed ones). Masking (``nas_llm.model.masking``) reads its channel sets from
:func:`layer_cuts`, the perplexity objective swaps :func:`sliced_projections` in for a call
(``nas_llm.model.swap``), and :func:`slice_model` keeps them -- one definition of "apply a plan".

Only shapes change; the stock transformers forward already infers the head count from the
projection width (``view(..., -1, head_dim)``) and the query/KV ratio from the two widths
(``repeat_kv`` by ``heads // kv_heads``): every kept KV group keeps the same number of query
heads, so the sliced layer is a standard GQA layer with its own head counts. Per-head and
whole-width q/k norms (Cohere, OLMo2) are sliced with the heads they normalise. The per-layer
shapes are recorded in ``config.nas_llm`` so that :func:`nas_llm.load_subnet` can rebuild the
model from stock classes.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from nas_llm.errors import ConfigError
from search_spaces import Plan, get_family
from search_spaces.family import Family, ModelDims
from search_spaces.plan import LayerPlan, check_plan, cuts_attention, kv_channels, query_channels, query_heads

FORMAT_VERSION = 1
INPUT_CUT_ROLES = ("o", "down")  # the maps whose *input* columns a cut removes: the ones reformation refits


@dataclass(frozen=True)
class Cut:
    """The kept output rows (``rows``) or input columns (``cols``) of one projection; ``None``: all."""

    rows: list[int] | None = None
    cols: list[int] | None = None


def layer_cuts(lp: LayerPlan, dims: ModelDims, norm_roles: tuple[str, ...] = ()) -> dict[str, Cut]:
    """The projections a kept layer's plan changes, by role (q, k, v, o, gate, up, down order).

    Attention maps when KV groups or query heads are cut (q/k/v lose output rows, o loses the
    matching input columns), MLP maps when neurons are cut; a role whose map stays whole is absent.
    ``norm_roles`` (``Family.sliced_norm_roles``): q/k norms sliced with the heads, whose ``rows`` are
    indices into the first axis of their weight (a head for the "head" layout, a channel for "width").
    """
    cuts: dict[str, Cut] = {}
    if cuts_attention(lp, dims):
        q, kv = query_channels(lp, dims), kv_channels(lp.kv_groups, dims)
        cuts.update(q=Cut(rows=q), k=Cut(rows=kv), v=Cut(rows=kv), o=Cut(cols=q))
        by_head = dims.head_norm_layout == "head"
        norm_rows = {"q_norm": query_heads(lp, dims) if by_head else q, "k_norm": list(lp.kv_groups) if by_head else kv}
        cuts.update({r: Cut(rows=norm_rows[r]) for r in norm_roles})
    if len(lp.neurons) < dims.intermediate:
        n = list(lp.neurons)
        cuts.update(gate=Cut(rows=n), up=Cut(rows=n), down=Cut(cols=n))
    return cuts


def sliced_linear(lin: nn.Linear, cut: Cut, weight: torch.Tensor | None = None) -> nn.Linear:
    """A new ``nn.Linear`` holding the kept part of ``lin``.

    ``weight`` (already cut to ``cut.cols``) replaces the selected weight of an input cut, e.g. reformed
    weights; it is used as it is (no copy, no gradient). An input cut leaves the output bias unchanged.
    """
    w = lin.weight.detach()
    b = None if lin.bias is None else lin.bias.detach()
    if weight is not None:
        if cut.rows is not None or cut.cols is None or tuple(weight.shape) != (w.shape[0], len(cut.cols)):
            raise ConfigError(f"a replacement weight must be the input-cut map's {w.shape[0]} x {len(cut.cols or [])} "
                              f"weight, got shape {tuple(weight.shape)} for {cut}")
        w = weight
    else:
        if cut.rows is not None:
            idx = torch.as_tensor(cut.rows, device=w.device)
            w = w.index_select(0, idx)
            b = None if b is None else b.index_select(0, idx)
        if cut.cols is not None:
            w = w.index_select(1, torch.as_tensor(cut.cols, device=w.device))
        if cut.rows is None and cut.cols is None:
            w = w.clone()  # index_select copies; a whole map must be copied too
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device="meta", dtype=w.dtype)
    new.weight = nn.Parameter(w, requires_grad=weight is None)
    if b is not None:
        new.bias = nn.Parameter(b.clone())
    return new


def sliced_norm(norm: nn.Module, rows: list[int]) -> nn.Module:
    """A copy of a q/k norm whose parameters keep ``rows`` of their first axis (the norm classes infer
    their width from the input, so only the parameters change)."""
    idx = torch.as_tensor(rows)
    return _norm_like(norm, {n: p.detach().index_select(0, idx.to(p.device)) for n, p in norm.named_parameters(recurse=False)})


def _norm_like(norm: nn.Module, params: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``norm`` (hooks not shared) holding ``params``; a ``normalized_shape`` follows them."""
    saved = norm._parameters
    norm._parameters = {}
    try:
        new = copy.deepcopy(norm)
    finally:
        norm._parameters = saved
    for n, t in params.items():
        new.register_parameter(n, nn.Parameter(t))
    if hasattr(new, "normalized_shape") and "weight" in params:
        new.normalized_shape = tuple(params["weight"].shape)
    return new


def sliced_projections(layer: nn.Module, fam: Family, lp: LayerPlan, dims: ModelDims,
                       weights: dict[str, torch.Tensor] | None = None) -> dict[str, nn.Module]:
    """The cut projections (and sliced q/k norms) of one kept layer, by role (only the roles the plan changes).

    ``weights[role]`` (``"o"`` / ``"down"``, already cut to the kept columns) replaces that map's
    selected weight; a weight for a map the plan does not cut is an error.
    """
    weights = weights or {}
    cuts = layer_cuts(lp, dims, fam.sliced_norm_roles)
    stray = sorted(set(weights) - {r for r in cuts if r in INPUT_CUT_ROLES})
    if stray:
        raise ConfigError(f"replacement weights for {stray}: only the input-cut maps of this layer "
                          f"({[r for r in cuts if r in INPUT_CUT_ROLES]}) can be replaced")
    out: dict[str, nn.Module] = {}
    for role, cut in cuts.items():
        mod = fam.module(layer, role)
        out[role] = sliced_norm(mod, cut.rows) if role in fam.sliced_norm_roles else sliced_linear(mod, cut, weights.get(role))
    return out


def resize_layer(layer: nn.Module, fam: Family, dims: ModelDims, kv_groups: int, neurons: int, device: Any = "meta",
                 heads: int | None = None) -> None:
    """Give a layer empty projections (and q/k norms) of a subnet's shapes (used when rebuilding from disk);
    ``heads``: the layer's query heads (default: every head of the kept groups)."""
    hd, h = dims.head_dim, dims.hidden
    heads = kv_groups * dims.q_per_group if heads is None else heads
    q_out, kv_out = heads * hd, kv_groups * hd
    shapes = {"q": (h, q_out), "k": (h, kv_out), "v": (h, kv_out), "o": (q_out, h), "gate": (h, neurons), "up": (h, neurons), "down": (neurons, h)}
    old = fam.linears(layer)
    for role, (fin, fout) in shapes.items():
        ref = old[role]
        fam.set_linear(layer, role, nn.Linear(fin, fout, bias=ref.bias is not None, device=device, dtype=ref.weight.dtype))
    set_query_groups(layer, fam, heads, kv_groups)
    rows = {"q_norm": heads, "k_norm": kv_groups} if dims.head_norm_layout == "head" else {"q_norm": q_out, "k_norm": kv_out}
    for role in fam.sliced_norm_roles:
        norm = fam.module(layer, role)
        fam.set_module(layer, role, _norm_like(norm, {n: torch.empty((rows[role], *p.shape[1:]), dtype=p.dtype, device=device)
                                                      for n, p in norm.named_parameters(recurse=False)}))


def set_query_groups(layer: nn.Module, fam: Family, heads: int, kv_heads: int) -> None:
    """Tell the attention module how many query heads share each KV head (``repeat_kv``'s factor).

    transformers reads ``num_key_value_groups`` from the module, set once from the config; a layer that
    keeps fewer query heads per KV group than the dense model must carry its own.
    """
    attn = fam.attention(layer)
    if hasattr(attn, "num_key_value_groups"):
        attn.num_key_value_groups = heads // kv_heads


def _set_layers(model: nn.Module, fam: Family, layers: list[nn.Module]) -> None:
    parent_path, _, attr = fam.layers.rpartition(".")
    parent = model
    for part in parent_path.split(".") if parent_path else []:
        parent = getattr(parent, part)
    setattr(parent, attr, nn.ModuleList(layers))


def layer_record(config: Any) -> list[dict] | None:
    rec = getattr(config, "nas_llm", None)
    return None if not rec else rec.get("layers")


def update_config(config: Any, fam: Family, dims: ModelDims, layers: list[dict], extra: dict | None = None) -> None:
    """Write per-layer shapes into ``config.nas_llm`` and make the stock fields consistent.

    The stock fields keep the dense shapes (a valid config for any subnet), except for a
    *uniform* subnet whose shapes the stock config accepts: then they get those shapes and the
    folder also loads with plain ``AutoModelForCausalLM.from_pretrained``. Non-uniform subnets
    are rebuilt by ``nas_llm.load_subnet`` from ``config.nas_llm["layers"]``.
    """
    src = [r["source_layer"] for r in layers]
    for name in fam.per_layer_config_lists:
        lst = getattr(config, name, None)
        if isinstance(lst, (list, tuple)) and len(lst) == dims.num_layers:
            setattr(config, name, [lst[i] for i in src])
    config.num_hidden_layers = len(layers)
    config.head_dim = dims.head_dim
    shapes = {(r["num_attention_heads"], r["num_key_value_heads"], r["intermediate_size"]) for r in layers}
    dense = (dims.num_heads, dims.num_kv_heads, dims.intermediate)
    candidates = [shapes.pop(), dense] if len(shapes) == 1 else [dense]
    for heads, kv, inter in candidates:
        config.num_attention_heads, config.num_key_value_heads, config.intermediate_size = heads, kv, inter
        try:
            config.validate()
            break
        except Exception:  # the stock validator rejects e.g. hidden % heads != 0: keep dense fields
            continue
    old = getattr(config, "nas_llm", None) or {}
    config.nas_llm = {
        "format": FORMAT_VERSION,
        "dense": old.get("dense") or {"num_hidden_layers": dims.num_layers, "num_attention_heads": dims.num_heads,
                                       "num_key_value_heads": dims.num_kv_heads, "intermediate_size": dims.intermediate},
        "layers": layers,
        **(extra or {}),
    }


SHAPE_KEYS = ("num_attention_heads", "num_key_value_heads", "intermediate_size")


def mark_nonstock(config: Any) -> None:
    """Make plain ``from_pretrained`` fail loudly on this model's folder; ``load_subnet`` still loads it.

    Call this after adding tensors a stock class cannot hold (a bias on ``down_proj`` from bias
    compensation, FlexiGPT's shared maps): stock loading must not silently drop or re-initialise them.
    The stock shape fields get the dense shapes; where every layer has exactly those (a depth-only cut,
    a full-depth FlexiGPT model) ``intermediate_size`` gets one more than the dense width, which no
    layer has, so a stock class meets a size mismatch. The per-layer record holds the true shapes and the
    stock fields as they were (``nas_llm["stock"]``, for :func:`unmark_nonstock`).
    """
    nas = config.nas_llm
    dense = nas["dense"]
    stock = nas.get("stock") or {k: getattr(config, k) for k in SHAPE_KEYS}
    rec = layer_record(config) or [{"source_layer": i, **{k: dense[k] for k in SHAPE_KEYS}} for i in range(config.num_hidden_layers)]
    for k in SHAPE_KEYS:
        setattr(config, k, dense[k])
    if all(all(r[k] == dense[k] for k in SHAPE_KEYS) for r in rec):
        config.intermediate_size = dense["intermediate_size"] + 1
    config.nas_llm = {**nas, "layers": rec, "nonstock": True, "stock": stock}


def unmark_nonstock(config: Any) -> None:
    """Undo :func:`mark_nonstock`: the stock shape fields as they were before it."""
    nas = dict(config.nas_llm)
    for k, v in (nas.pop("stock", None) or {}).items():
        setattr(config, k, v)
    nas.pop("nonstock", None)
    config.nas_llm = nas


def slice_model(model: nn.Module, plan: Plan, inplace: bool = False, subnet: Any = None) -> nn.Module:
    """A physically smaller copy of ``model`` (or the model itself with ``inplace=True``)."""
    fam = get_family(model)
    if layer_record(model.config) is not None:
        raise ConfigError("this model is already sliced; slice the dense model instead")
    dims = fam.dims(model)
    check_plan(plan, dims)
    new = model if inplace else copy.deepcopy(model)
    kept, record = [], []
    for i, (layer, lp) in enumerate(zip(fam.decoder_layers(new), plan.layers)):
        if not lp.keep:
            continue
        for role, new_lin in sliced_projections(layer, fam, lp, dims).items():
            fam.set_linear(layer, role, new_lin)
        set_query_groups(layer, fam, len(query_heads(lp, dims)), len(lp.kv_groups))
        fam.attention(layer).layer_idx = len(kept)  # KV-cache slot of the layer in the smaller model
        kept.append(layer)
        record.append({
            "source_layer": i,
            "num_attention_heads": len(query_heads(lp, dims)),
            "num_key_value_heads": len(lp.kv_groups),
            "intermediate_size": len(lp.neurons),
        })
    _set_layers(new, fam, kept)
    extra = {"subnet": subnet.to_dict()} if subnet is not None else {}
    update_config(new.config, fam, dims, record, extra)
    new._nas_llm_plan = plan  # written to subnet.json by export()
    return new

"""A subnet resolved to concrete indices (``Plan``), and the index arithmetic of heads and KV groups.

Masking, slicing, importance, reformation and export all translate "keep these KV groups (and these
query heads in them)" into channel indices the same way; that arithmetic lives here, once, next to
the plan it reads.
"""
from __future__ import annotations

from dataclasses import dataclass

from .family import ModelDims
from .subnet import SubnetError


@dataclass(frozen=True)
class LayerPlan:
    keep: bool
    kv_groups: tuple[int, ...]  # kept KV group indices, ascending
    neurons: tuple[int, ...]  # kept MLP neuron indices, ascending
    # per kept group (in ``kv_groups`` order): the indices, inside the group (0..heads-per-group-1,
    # ascending), of its kept query heads -- the same number in every group; None = all heads
    heads: tuple[tuple[int, ...], ...] | None = None


@dataclass(frozen=True)
class Plan:
    """A subnet resolved to concrete indices: what masking and slicing consume."""

    layers: tuple[LayerPlan, ...]

    def to_dict(self) -> dict:
        return {"layers": [{"keep": p.keep, "kv_groups": list(p.kv_groups), "neurons": list(p.neurons),
                            **({} if p.heads is None else {"heads": [list(h) for h in p.heads]})} for p in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(tuple(LayerPlan(bool(p["keep"]), tuple(p["kv_groups"]), tuple(p["neurons"]),
                                   None if p.get("heads") is None else tuple(tuple(h) for h in p["heads"]))
                        for p in d["layers"]))


def head_channels(kv_groups, dims: ModelDims) -> list[int]:
    """``o_proj`` input / ``q_proj`` output channels of the query heads of the given KV groups.

    HF's ``repeat_kv`` gives query head h the KV head h // q_per_group, so KV group g owns
    query heads g*q_per_group ... (g+1)*q_per_group - 1.
    """
    qpg, hd = dims.q_per_group, dims.head_dim
    return [c for g in kv_groups for h in range(g * qpg, (g + 1) * qpg) for c in range(h * hd, (h + 1) * hd)]


def kv_channels(kv_groups, dims: ModelDims) -> list[int]:
    hd = dims.head_dim
    return [c for g in kv_groups for c in range(g * hd, (g + 1) * hd)]


def query_heads(lp: LayerPlan, dims: ModelDims) -> list[int]:
    """The dense indices of the query heads a layer plan keeps (all heads of its groups without a head cut)."""
    qpg = dims.q_per_group
    if lp.heads is not None:
        return [g * qpg + j for g, local in zip(lp.kv_groups, lp.heads) for j in local]
    return [h for g in lp.kv_groups for h in range(g * qpg, (g + 1) * qpg)]


def query_channels(lp: LayerPlan, dims: ModelDims) -> list[int]:
    """``q_proj`` output / ``o_proj`` input channels of the query heads a layer plan keeps.

    Kept heads stay in ascending order, grouped by KV group with the same count per group, so in
    the sliced layer query head h' reads KV head h' // heads-per-group, as ``repeat_kv`` wants.
    """
    hd = dims.head_dim
    return [c for h in query_heads(lp, dims) for c in range(h * hd, (h + 1) * hd)]


def cuts_attention(lp: LayerPlan, dims: ModelDims) -> bool:
    """Whether a layer plan removes any KV group or query head."""
    return len(lp.kv_groups) < dims.num_kv_heads or (lp.heads is not None and any(len(h) < dims.q_per_group for h in lp.heads))


def check_plan(plan: Plan, dims: ModelDims) -> None:
    if len(plan.layers) != dims.num_layers:
        raise SubnetError(f"plan has {len(plan.layers)} layers, the model has {dims.num_layers}")
    for i, lp in enumerate(plan.layers):
        if lp.keep and not lp.kv_groups:
            raise SubnetError(f"layer {i}: 0 KV groups kept; keep at least 1 or drop the layer")
        if lp.keep and not lp.neurons:
            raise SubnetError(f"layer {i}: 0 MLP neurons kept; keep at least one block or drop the layer")
        if any(not 0 <= g < dims.num_kv_heads for g in lp.kv_groups):
            raise SubnetError(f"layer {i}: KV group index outside [0, {dims.num_kv_heads - 1}]")
        if any(not 0 <= n < dims.intermediate for n in lp.neurons):
            raise SubnetError(f"layer {i}: neuron index outside [0, {dims.intermediate - 1}]")
        if lp.keep and lp.heads is not None:
            _check_heads(i, lp, dims)
    if not any(lp.keep for lp in plan.layers):
        raise SubnetError("all layers are dropped; keep at least one")


def _check_heads(i: int, lp: LayerPlan, dims: ModelDims) -> None:
    """Kept query heads: one entry per kept group, 1..heads-per-group ascending indices, the same count in each."""
    qpg = dims.q_per_group
    if len(lp.heads) != len(lp.kv_groups):
        raise SubnetError(f"layer {i}: query heads are given for {len(lp.heads)} KV groups, the plan keeps {len(lp.kv_groups)}")
    for g, local in zip(lp.kv_groups, lp.heads):
        if not 1 <= len(local) <= qpg:
            raise SubnetError(f"layer {i}: {len(local)} query heads kept in KV group {g}, outside the allowed range [1, {qpg}]")
        if list(local) != sorted(set(local)) or not all(0 <= j < qpg for j in local):
            raise SubnetError(f"layer {i}: query heads {list(local)} of KV group {g} must be distinct ascending indices "
                              f"in [0, {qpg - 1}]")
    counts = [len(h) for h in lp.heads]
    if len(set(counts)) > 1:
        raise SubnetError(f"layer {i}: the kept KV groups keep different numbers of query heads "
                          f"({', '.join(f'group {g}: {n}' for g, n in zip(lp.kv_groups, counts))}); attention needs the "
                          f"same number in every group, in [1, {qpg}]")


__all__ = ["LayerPlan", "Plan", "check_plan", "cuts_attention", "head_channels", "kv_channels", "query_channels",
           "query_heads"]

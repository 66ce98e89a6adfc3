"""A subnet resolved to concrete indices (``Plan``), and the index arithmetic of heads and KV groups.

Masking, slicing, importance, reformation and export all translate "keep these KV groups" into
channel indices the same way; that arithmetic lives here, once, next to the plan it reads.
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


@dataclass(frozen=True)
class Plan:
    """A subnet resolved to concrete indices: what masking and slicing consume."""

    layers: tuple[LayerPlan, ...]

    def to_dict(self) -> dict:
        return {"layers": [{"keep": p.keep, "kv_groups": list(p.kv_groups), "neurons": list(p.neurons)} for p in self.layers]}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        return cls(tuple(LayerPlan(bool(p["keep"]), tuple(p["kv_groups"]), tuple(p["neurons"])) for p in d["layers"]))


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
    if not any(lp.keep for lp in plan.layers):
        raise SubnetError("all layers are dropped; keep at least one")


__all__ = ["LayerPlan", "Plan", "check_plan", "head_channels", "kv_channels"]

"""Which heads and neurons survive for a given count: an importance order per layer.

A ``Ranking`` is computed once from calibration data (``nas_llm.model.importance``) and turns any
``Subnet`` (counts) into a ``Plan`` (concrete kept indices) by keeping the top-k.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .plan import LayerPlan, Plan
from .subnet import Subnet, SubnetError


@dataclass
class Ranking:
    """Per layer: KV-group order and neuron order, most important first; optional layer scores and,
    per layer and KV group, the order of the group's query heads (``q_order[layer][group]``: local
    head indices 0..heads-per-group-1, most important first; ``None``: identity, as in a ranking
    written before query heads were ranked)."""

    kv_order: list[np.ndarray]
    neuron_order: list[np.ndarray]
    layer_scores: np.ndarray | None = None  # e.g. Block Influence, higher = more important
    method: str = ""
    q_order: list[np.ndarray] | None = None  # per layer: (KV groups, heads per group) int array

    @classmethod
    def from_scores(cls, kv_scores: list[np.ndarray], neuron_scores: list[np.ndarray], layer_scores=None, method: str = "",
                    head_scores: list[np.ndarray] | None = None) -> "Ranking":
        """``head_scores[layer]``: one score per query head (dense order, group-major), ranked inside each group."""
        # stable sort on -score: ties keep the lower index first, so rankings are deterministic
        kv = [np.argsort(-np.asarray(s, dtype=np.float64), kind="stable") for s in kv_scores]
        nn_ = [np.argsort(-np.asarray(s, dtype=np.float64), kind="stable") for s in neuron_scores]
        ls = None if layer_scores is None else np.asarray(layer_scores, dtype=np.float64)
        q = None
        if head_scores is not None:
            q = [np.argsort(-np.asarray(h, dtype=np.float64).reshape(len(k), -1), axis=1, kind="stable")
                 for h, k in zip(head_scores, kv)]
        return cls(kv, nn_, ls, method, q)

    @classmethod
    def identity(cls, num_layers: int, num_kv: int, intermediate: int) -> "Ranking":
        return cls([np.arange(num_kv)] * num_layers, [np.arange(intermediate)] * num_layers, None, "identity")

    def resolve(self, subnet: Subnet) -> Plan:
        if subnet.num_layers != len(self.kv_order):
            raise SubnetError(f"subnet has {subnet.num_layers} layers, the ranking {len(self.kv_order)}")
        out = []
        for i, c in enumerate(subnet.layers):
            if c.kv_groups > len(self.kv_order[i]) or c.neurons > len(self.neuron_order[i]):
                raise SubnetError(f"layer {i}: asks for more heads/neurons than the layer has")
            groups = tuple(sorted(int(j) for j in self.kv_order[i][: c.kv_groups]))
            out.append(LayerPlan(c.keep, groups, tuple(sorted(int(j) for j in self.neuron_order[i][: c.neurons])),
                                 self._heads(i, groups, c.heads_per_group)))
        return Plan(tuple(out))

    def _heads(self, i: int, groups: tuple[int, ...], per_group: int | None) -> tuple[tuple[int, ...], ...] | None:
        """The top ``per_group`` query heads of each kept group (indices inside the group), None for all."""
        if per_group is None:
            return None
        if self.q_order is None:  # identity order (a ranking without one); the plan check bounds per_group
            return tuple(tuple(range(per_group)) for _ in groups)
        order = np.asarray(self.q_order[i])
        qpg = order.shape[1]
        if not 1 <= per_group <= qpg:
            raise SubnetError(f"layer {i}: {per_group} query heads per KV group is outside the allowed range [1, {qpg}]")
        if per_group == qpg:
            return None
        return tuple(tuple(sorted(int(j) for j in order[g][:per_group])) for g in groups)

    # -- persistence (JSON: no pickle) ------------------------------------------------------
    def to_dict(self) -> dict:
        d = {
            "method": self.method,
            "kv_order": [np.asarray(o).tolist() for o in self.kv_order],
            "neuron_order": [np.asarray(o).tolist() for o in self.neuron_order],
            "layer_scores": None if self.layer_scores is None else self.layer_scores.tolist(),
        }
        if self.q_order is not None:
            d["q_order"] = [np.asarray(o).tolist() for o in self.q_order]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Ranking":
        ls, q = d.get("layer_scores"), d.get("q_order")
        return cls(
            [np.asarray(o, dtype=int) for o in d["kv_order"]],
            [np.asarray(o, dtype=int) for o in d["neuron_order"]],
            None if ls is None else np.asarray(ls, dtype=np.float64),
            d.get("method", ""),
            None if q is None else [np.asarray(o, dtype=int) for o in q],
        )

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "Ranking":
        return cls.from_dict(json.loads(Path(path).read_text()))

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
    """Per layer: KV-group order and neuron order, most important first; optional layer scores."""

    kv_order: list[np.ndarray]
    neuron_order: list[np.ndarray]
    layer_scores: np.ndarray | None = None  # e.g. Block Influence, higher = more important
    method: str = ""

    @classmethod
    def from_scores(cls, kv_scores: list[np.ndarray], neuron_scores: list[np.ndarray], layer_scores=None, method: str = "") -> "Ranking":
        # stable sort on -score: ties keep the lower index first, so rankings are deterministic
        kv = [np.argsort(-np.asarray(s, dtype=np.float64), kind="stable") for s in kv_scores]
        nn_ = [np.argsort(-np.asarray(s, dtype=np.float64), kind="stable") for s in neuron_scores]
        ls = None if layer_scores is None else np.asarray(layer_scores, dtype=np.float64)
        return cls(kv, nn_, ls, method)

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
            out.append(
                LayerPlan(
                    c.keep,
                    tuple(sorted(int(j) for j in self.kv_order[i][: c.kv_groups])),
                    tuple(sorted(int(j) for j in self.neuron_order[i][: c.neurons])),
                )
            )
        return Plan(tuple(out))

    # -- persistence (JSON: no pickle) ------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "kv_order": [o.tolist() for o in self.kv_order],
            "neuron_order": [o.tolist() for o in self.neuron_order],
            "layer_scores": None if self.layer_scores is None else self.layer_scores.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Ranking":
        ls = d.get("layer_scores")
        return cls(
            [np.asarray(o, dtype=int) for o in d["kv_order"]],
            [np.asarray(o, dtype=int) for o in d["neuron_order"]],
            None if ls is None else np.asarray(ls, dtype=np.float64),
            d.get("method", ""),
        )

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "Ranking":
        return cls.from_dict(json.loads(Path(path).read_text()))

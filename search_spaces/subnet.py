"""The ``Subnet`` value: per layer, how many KV groups and MLP neurons stay, and whether the layer stays.

A subnet says *how many*; an importance ranking (``search_spaces.ranking``) says *which*.
Keeping the two apart keeps the search space small and integer-valued.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from nas_llm.errors import NasLLMError


class SubnetError(NasLLMError, ValueError):
    """A subnet that the model cannot realise; the message names the layer and the bound."""


@dataclass(frozen=True)
class LayerChoice:
    kv_groups: int  # kept KV groups; each takes its query heads with it (MHA: one group = one head)
    neurons: int  # kept MLP neurons
    keep: bool = True  # False drops the whole decoder layer


@dataclass(frozen=True)
class Subnet:
    layers: tuple[LayerChoice, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))

    @classmethod
    def from_lists(cls, kv_groups: Iterable[int], neurons: Iterable[int], keep: Iterable[bool] | None = None) -> "Subnet":
        kv, nn_ = list(kv_groups), list(neurons)
        kp = [True] * len(kv) if keep is None else list(keep)
        if not len(kv) == len(nn_) == len(kp):
            raise SubnetError(f"kv_groups, neurons and keep have different lengths: {len(kv)}, {len(nn_)}, {len(kp)}")
        return cls(tuple(LayerChoice(int(a), int(b), bool(c)) for a, b, c in zip(kv, nn_, kp)))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def kept_layers(self) -> list[int]:
        return [i for i, c in enumerate(self.layers) if c.keep]

    def to_dict(self) -> dict[str, Any]:
        return {
            "kv_groups": [c.kv_groups for c in self.layers],
            "neurons": [c.neurons for c in self.layers],
            "keep": [c.keep for c in self.layers],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Subnet":
        try:
            return cls.from_lists(d["kv_groups"], d["neurons"], d.get("keep"))
        except KeyError as e:
            raise SubnetError(f"subnet JSON lacks the key {e}; expected kv_groups, neurons, keep") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> "Subnet":
        return cls.from_dict(json.loads(s))

    def key(self) -> str:
        """A short stable identity used to cache evaluations."""
        return ";".join(f"{c.kv_groups},{c.neurons}" if c.keep else "x" for c in self.layers)

    def summary(self) -> str:
        kept = [c for c in self.layers if c.keep]
        if not kept:
            return "no layers"
        return (
            f"{len(kept)}/{len(self.layers)} layers, kv groups {min(c.kv_groups for c in kept)}-"
            f"{max(c.kv_groups for c in kept)}, neurons {min(c.neurons for c in kept)}-{max(c.neurons for c in kept)}"
        )


__all__ = ["LayerChoice", "Subnet", "SubnetError", "asdict"]

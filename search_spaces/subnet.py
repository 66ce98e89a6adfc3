"""The ``Subnet`` value: per layer, how many KV groups, query heads per group and MLP neurons stay, and
whether the layer stays.

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
    # query heads kept in *every* kept KV group (so attention stays a standard GQA); None = all of them,
    # which is what a subnet written before this field existed means
    heads_per_group: int | None = None

    def heads(self, q_per_group: int) -> int:
        """Kept query heads of the layer, given the dense model's query heads per KV group."""
        return self.kv_groups * (q_per_group if self.heads_per_group is None else self.heads_per_group)

    def label(self) -> str:
        """``groups/neurons`` (``groups x heads/neurons`` with a query-head cut), ``x`` when dropped."""
        if not self.keep:
            return "x"
        q = "" if self.heads_per_group is None else f"x{self.heads_per_group}"
        return f"{self.kv_groups}{q}/{self.neurons}"


@dataclass(frozen=True)
class Subnet:
    layers: tuple[LayerChoice, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))

    @classmethod
    def from_lists(cls, kv_groups: Iterable[int], neurons: Iterable[int], keep: Iterable[bool] | None = None,
                   heads_per_group: Iterable[int | None] | None = None) -> "Subnet":
        kv, nn_ = list(kv_groups), list(neurons)
        kp = [True] * len(kv) if keep is None else list(keep)
        hp = [None] * len(kv) if heads_per_group is None else list(heads_per_group)
        if not len(kv) == len(nn_) == len(kp) == len(hp):
            raise SubnetError(f"kv_groups, neurons, keep and heads_per_group have different lengths: "
                              f"{len(kv)}, {len(nn_)}, {len(kp)}, {len(hp)}")
        return cls(tuple(LayerChoice(int(a), int(b), bool(c), None if h is None else _whole(h, i))
                         for i, (a, b, c, h) in enumerate(zip(kv, nn_, kp, hp))))

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def kept_layers(self) -> list[int]:
        return [i for i, c in enumerate(self.layers) if c.keep]

    @property
    def cuts_heads(self) -> bool:
        """Whether some layer keeps fewer than all query heads of its KV groups."""
        return any(c.heads_per_group is not None for c in self.layers)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "kv_groups": [c.kv_groups for c in self.layers],
            "neurons": [c.neurons for c in self.layers],
            "keep": [c.keep for c in self.layers],
        }
        if self.cuts_heads:  # absent = all heads: subnets without query-head cuts keep their old JSON
            d["heads_per_group"] = [c.heads_per_group for c in self.layers]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Subnet":
        try:
            return cls.from_lists(d["kv_groups"], d["neurons"], d.get("keep"), d.get("heads_per_group"))
        except KeyError as e:
            raise SubnetError(f"subnet JSON lacks the key {e}; expected kv_groups, neurons, keep "
                              f"(and optionally heads_per_group)") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> "Subnet":
        return cls.from_dict(json.loads(s))

    def key(self) -> str:
        """A short stable identity used to cache evaluations."""
        return ";".join(("x" if not c.keep else f"{c.kv_groups},{c.neurons}"
                         + ("" if c.heads_per_group is None else f",{c.heads_per_group}")) for c in self.layers)

    def summary(self) -> str:
        kept = [c for c in self.layers if c.keep]
        if not kept:
            return "no layers"
        heads = [c.heads_per_group for c in kept if c.heads_per_group is not None]
        return (
            f"{len(kept)}/{len(self.layers)} layers, kv groups {min(c.kv_groups for c in kept)}-"
            f"{max(c.kv_groups for c in kept)}, neurons {min(c.neurons for c in kept)}-{max(c.neurons for c in kept)}"
            + (f", query heads per group cut to {min(heads)}-{max(heads)} in {len(heads)} layers" if heads else "")
        )


def _whole(v: Any, layer: int) -> int:
    """``v`` as an int; a float that is not whole (3.5 heads) is an error naming the layer."""
    if isinstance(v, bool) or not float(v).is_integer():
        raise SubnetError(f"layer {layer}: heads_per_group={v!r} is not a whole number of query heads")
    return int(v)


__all__ = ["LayerChoice", "Subnet", "SubnetError", "asdict"]

"""The subnet space of one dense model: bounds, validation, integer encoding, size, exact parameter counts."""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Iterable

import numpy as np

from .family import ModelDims, get_family
from .subnet import LayerChoice, Subnet, SubnetError


FIELDS = ("kv", "q", "nb", "keep")  # per-layer variables: KV groups, query heads per group, neuron blocks, keep


class SubnetSpace:
    """Per layer: KV groups in [1, G], query heads per kept group in [1, Q], neurons in ``neuron_choices``,
    layer kept or dropped.

    Neurons come in multiples of ``granularity`` (unaligned widths are slow on GPUs); when the
    dense width is not a multiple, the dense width itself is the last allowed value.
    ``query_heads=False`` keeps every query head of a kept group (cuts are whole KV groups only).
    The optimiser view is an integer vector, per layer ``[kv, q, blocks, keep]`` where the variables
    that cannot move are left out: ``kv`` with one KV group (MQA, where ``q`` is the only head
    dimension), ``q`` with one query head per group (MHA) or ``query_heads=False``. The names are
    :attr:`fields`.
    """

    def __init__(self, dims: ModelDims, granularity: int = 64, allow_layer_drop: bool = True, query_heads: bool = True):
        if granularity < 1:
            raise SubnetError(f"granularity must be >= 1, got {granularity}")
        if granularity > dims.intermediate:
            raise SubnetError(f"granularity {granularity} exceeds the MLP width {dims.intermediate}")
        self.dims = dims
        self.granularity = int(granularity)
        self.allow_layer_drop = allow_layer_drop
        self.query_heads = bool(query_heads)
        g, width = self.granularity, dims.intermediate
        choices = list(range(g, width + 1, g))
        if choices[-1] != width:
            choices.append(width)
        self.neuron_choices: tuple[int, ...] = tuple(choices)

    @classmethod
    def from_model(cls, model_or_config: Any, granularity: int = 64, allow_layer_drop: bool = True,
                   query_heads: bool = True) -> "SubnetSpace":
        return cls(get_family(model_or_config).dims(model_or_config), granularity, allow_layer_drop, query_heads)

    @property
    def num_layers(self) -> int:
        return self.dims.num_layers

    @property
    def n_blocks(self) -> int:
        return len(self.neuron_choices)

    @property
    def searches_heads(self) -> bool:
        """Whether query heads inside KV groups are a dimension of this space (GQA/MQA, not turned off)."""
        return self.query_heads and self.dims.q_per_group > 1

    @property
    def head_choices(self) -> range:
        """Allowed query heads per kept KV group."""
        qpg = self.dims.q_per_group
        return range(1, qpg + 1) if self.searches_heads else range(qpg, qpg + 1)

    # -- construction ------------------------------------------------------------------------
    def choice(self, kv_groups: int, neurons: int, keep: bool = True, heads_per_group: int | None = None) -> LayerChoice:
        """A layer choice in canonical form: all query heads of a group are ``None``, so equal subnets share a key."""
        h = None if heads_per_group == self.dims.q_per_group else heads_per_group
        return LayerChoice(int(kv_groups), int(neurons), bool(keep), None if h is None else int(h))

    def canonical(self, subnet: Subnet) -> Subnet:
        """``subnet`` with every layer in canonical form (see :meth:`choice`)."""
        return Subnet(tuple(self.choice(c.kv_groups, c.neurons, c.keep, c.heads_per_group) for c in subnet.layers))

    def dense(self) -> Subnet:
        d = self.dims
        return Subnet(tuple(LayerChoice(d.num_kv_heads, d.intermediate, True) for _ in range(d.num_layers)))

    def uniform(self, kv_groups: int | None = None, neurons: int | None = None, drop: Iterable[int] = (),
                heads_per_group: int | None = None) -> Subnet:
        d = self.dims
        kv = d.num_kv_heads if kv_groups is None else kv_groups
        n = d.intermediate if neurons is None else neurons
        dropped = set(drop)
        s = Subnet(tuple(self.choice(kv, n, i not in dropped, heads_per_group) for i in range(d.num_layers)))
        self.validate(s)
        return s

    def uniform_at_ratio(self, ratio: float, mode: str = "mlp") -> Subnet:
        """The uniform subnet whose decoder-param ratio is nearest ``ratio``.

        mode="mlp" cuts only neurons (attention kept), "both" cuts heads (KV groups and, where the space
        has them, query heads per group) and neurons, "layers" drops the last layers first (use a
        ranking for a smarter order).
        """
        if not 0 < ratio <= 1:
            raise SubnetError(f"ratio must be in (0, 1], got {ratio}")
        d = self.dims
        cands: list[Subnet] = []
        if mode == "mlp":
            cands = [self.uniform(neurons=n) for n in self.neuron_choices]
        elif mode == "both":
            for kv in range(1, d.num_kv_heads + 1):
                for q in reversed(self.head_choices):  # ties: more heads per group, fewer groups (smaller KV cache)
                    for n in self.neuron_choices:
                        cands.append(self.uniform(kv, n, heads_per_group=q))
        elif mode == "layers":
            for k in range(1, d.num_layers + 1):
                cands.append(self.uniform(drop=range(k, d.num_layers)))
        else:
            raise SubnetError(f"unknown mode {mode!r}; choose one of mlp, both, layers")
        return min(cands, key=lambda s: (abs(self.ratio(s) - ratio), -self.ratio(s)))

    def sample(self, rng: np.random.Generator, p_drop: float = 0.0) -> Subnet:
        d = self.dims
        layers = []
        for _ in range(d.num_layers):
            keep = not (self.allow_layer_drop and rng.random() < p_drop)
            kv, n = int(rng.integers(1, d.num_kv_heads + 1)), int(rng.choice(self.neuron_choices))
            q = int(rng.choice(self.head_choices)) if self.searches_heads else None
            layers.append(self.choice(kv, n, keep, q))
        if not any(c.keep for c in layers):
            layers[int(rng.integers(d.num_layers))] = replace(layers[0], keep=True)
        return Subnet(tuple(layers))

    # -- validation --------------------------------------------------------------------------
    def validate(self, subnet: Subnet) -> Subnet:
        d = self.dims
        if subnet.num_layers != d.num_layers:
            raise SubnetError(f"subnet has {subnet.num_layers} layers, the model has {d.num_layers}")
        for i, c in enumerate(subnet.layers):
            if not 1 <= c.kv_groups <= d.num_kv_heads:
                what = "heads" if d.q_per_group == 1 else "KV groups"
                raise SubnetError(f"layer {i}: {c.kv_groups} {what} is outside the allowed range [1, {d.num_kv_heads}]")
            self._check_heads(i, c.heads_per_group)
            if c.neurons not in self.neuron_choices:
                raise SubnetError(
                    f"layer {i}: neurons={c.neurons} is not allowed; it must be a multiple of the granularity "
                    f"{self.granularity} in [{self.neuron_choices[0]}, {self.neuron_choices[-1]}]"
                    + ("" if d.intermediate % self.granularity == 0 else f" or the full width {d.intermediate}")
                )
            if not c.keep and not self.allow_layer_drop:
                raise SubnetError(f"layer {i}: dropping layers is disabled in this space")
        if not subnet.kept_layers:
            raise SubnetError("all layers are dropped; keep at least one")
        return subnet

    def _check_heads(self, i: int, h: int | None) -> None:
        qpg = self.dims.q_per_group
        if h is None or h == qpg:
            return
        if not 1 <= h <= qpg:
            raise SubnetError(f"layer {i}: {h} query heads per KV group is outside the allowed range [1, {qpg}]")
        if not self.query_heads:
            raise SubnetError(f"layer {i}: heads_per_group={h} cuts query heads inside KV groups, which this space "
                              f"does not search (it was built with query_heads=False, as a search with --no-query-heads is)")

    # -- optimiser encoding --------------------------------------------------------------------
    @property
    def fields(self) -> tuple[str, ...]:
        """The per-layer variables of the encoding, in order (a subset of ``kv, q, nb, keep``)."""
        return tuple(f for f in FIELDS if (f != "kv" or self.dims.num_kv_heads > 1) and (f != "q" or self.searches_heads))

    @property
    def n_var(self) -> int:
        return len(self.fields) * self.dims.num_layers

    def _field_bounds(self) -> dict[str, tuple[int, int]]:
        return {"kv": (1, self.dims.num_kv_heads), "q": (1, self.dims.q_per_group), "nb": (1, self.n_blocks),
                "keep": (0 if self.allow_layer_drop else 1, 1)}

    def variables(self) -> list[tuple[str, int, int]]:
        """``(name, low, high)`` of every variable: ``kv_3`` is layer 3's KV groups (what Optuna's parameters are called)."""
        b = self._field_bounds()
        return [(f"{f}_{i}", *b[f]) for i in range(self.dims.num_layers) for f in self.fields]

    def keep_positions(self) -> np.ndarray:
        """Indices of the ``keep`` variables in the encoding."""
        return np.arange(self.fields.index("keep"), self.n_var, len(self.fields))

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        v = self.variables()
        return np.asarray([lo for _, lo, _ in v], dtype=int), np.asarray([hi for _, _, hi in v], dtype=int)

    def encode(self, subnet: Subnet) -> np.ndarray:
        self.validate(subnet)
        out = []
        for c in subnet.layers:
            val = {"kv": c.kv_groups, "q": c.heads_per_group or self.dims.q_per_group,
                   "nb": self.neuron_choices.index(c.neurons) + 1, "keep": int(c.keep)}
            out += [val[f] for f in self.fields]
        return np.asarray(out, dtype=int)

    def decode(self, x: Iterable[int]) -> Subnet:
        x = np.asarray(list(x), dtype=float)
        f = self.fields
        if x.shape != (self.n_var,):
            raise SubnetError(f"encoding must have length {self.n_var} ({len(f)} per layer: {', '.join(f)}), got shape {x.shape}")
        if not np.all(np.isfinite(x)) or not np.all(x == np.round(x)):
            raise SubnetError("encoding must hold integers")
        xi = x.astype(int)
        xl, xu = self.bounds()
        bad = np.nonzero((xi < xl) | (xi > xu))[0]
        if bad.size:
            j = int(bad[0])
            name = {"kv": "kv_groups", "q": "heads_per_group", "nb": "neuron_blocks", "keep": "keep"}[f[j % len(f)]]
            raise SubnetError(f"layer {j // len(f)}: {name}={xi[j]} outside [{xl[j]}, {xu[j]}]")
        layers = []
        for i in range(self.dims.num_layers):
            v = dict(zip(f, xi[i * len(f):(i + 1) * len(f)].tolist()))
            layers.append(self.choice(v.get("kv", 1), self.neuron_choices[v["nb"] - 1], bool(v["keep"]), v.get("q")))
        return self.validate(Subnet(tuple(layers)))

    # -- size ------------------------------------------------------------------------------------
    def size(self) -> dict[str, Any]:
        """How many distinct subnets the space holds (a dropped layer's widths do not matter), for run.json."""
        per_layer = self.dims.num_kv_heads * len(self.head_choices) * self.n_blocks
        L = self.dims.num_layers
        n = (per_layer + 1) ** L - 1 if self.allow_layer_drop else per_layer ** L
        return {"variables_per_layer": list(self.fields), "n_var": self.n_var, "kv_groups": self.dims.num_kv_heads,
                "heads_per_group": [self.head_choices[0], self.head_choices[-1]], "neuron_choices": self.n_blocks,
                "choices_per_layer": per_layer + int(self.allow_layer_drop), "log10_subnets": round(math.log10(n), 3)}

    # -- parameter counts ------------------------------------------------------------------------
    def layer_params(self, kv_groups: int, neurons: int, heads_per_group: int | None = None) -> int:
        d = self.dims
        q_out = kv_groups * (d.q_per_group if heads_per_group is None else heads_per_group) * d.head_dim
        kv_out = kv_groups * d.head_dim
        attn = d.hidden * q_out + 2 * d.hidden * kv_out + q_out * d.hidden
        if d.attention_bias:
            attn += q_out + 2 * kv_out
        if d.o_bias:
            attn += d.hidden
        if d.head_norm_layout == "shared":
            attn += d.num_head_norms * d.head_dim
        else:  # per-head or whole-width q/k norms: one weight per kept q (and k) channel
            attn += (q_out, q_out + kv_out)[d.num_head_norms - 1] if d.num_head_norms else 0
        mlp = 3 * d.hidden * neurons + (2 * neurons + d.hidden if d.mlp_bias else 0)
        norms = d.num_layer_norms * d.hidden if d.layer_norm_params is None else d.layer_norm_params
        return attn + mlp + norms

    def params(self, subnet: Subnet, decoder_only: bool = True) -> int:
        """Exact parameter count of the sliced model (decoder layers, or the whole model)."""
        self.validate(subnet)
        dec = sum(self.layer_params(c.kv_groups, c.neurons, c.heads_per_group) for c in subnet.layers if c.keep)
        if decoder_only:
            return dec
        d = self.dims
        if d.outside_params is not None:
            return dec + d.outside_params
        return dec + d.vocab * d.hidden * (1 if d.tied_embeddings else 2) + d.hidden

    def ratio(self, subnet: Subnet, decoder_only: bool = True) -> float:
        return self.params(subnet, decoder_only) / self.params(self.dense(), decoder_only)

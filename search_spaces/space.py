"""The subnet space of one dense model: bounds, validation, integer encoding, exact parameter counts."""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .family import ModelDims, get_family
from .subnet import LayerChoice, Subnet, SubnetError


class SubnetSpace:
    """Per layer: KV groups in [1, G], neurons in ``neuron_choices``, layer kept or dropped.

    Neurons come in multiples of ``granularity`` (unaligned widths are slow on GPUs); when the
    dense width is not a multiple, the dense width itself is the last allowed value.
    The optimiser view is an integer vector ``[kv_0, blocks_0, keep_0, kv_1, ...]``.
    """

    def __init__(self, dims: ModelDims, granularity: int = 64, allow_layer_drop: bool = True):
        if granularity < 1:
            raise SubnetError(f"granularity must be >= 1, got {granularity}")
        if granularity > dims.intermediate:
            raise SubnetError(f"granularity {granularity} exceeds the MLP width {dims.intermediate}")
        self.dims = dims
        self.granularity = int(granularity)
        self.allow_layer_drop = allow_layer_drop
        g, width = self.granularity, dims.intermediate
        choices = list(range(g, width + 1, g))
        if choices[-1] != width:
            choices.append(width)
        self.neuron_choices: tuple[int, ...] = tuple(choices)

    @classmethod
    def from_model(cls, model_or_config: Any, granularity: int = 64, allow_layer_drop: bool = True) -> "SubnetSpace":
        return cls(get_family(model_or_config).dims(model_or_config), granularity, allow_layer_drop)

    @property
    def num_layers(self) -> int:
        return self.dims.num_layers

    @property
    def n_blocks(self) -> int:
        return len(self.neuron_choices)

    # -- construction ------------------------------------------------------------------------
    def dense(self) -> Subnet:
        d = self.dims
        return Subnet(tuple(LayerChoice(d.num_kv_heads, d.intermediate, True) for _ in range(d.num_layers)))

    def uniform(self, kv_groups: int | None = None, neurons: int | None = None, drop: Iterable[int] = ()) -> Subnet:
        d = self.dims
        kv = d.num_kv_heads if kv_groups is None else kv_groups
        n = d.intermediate if neurons is None else neurons
        dropped = set(drop)
        s = Subnet(tuple(LayerChoice(kv, n, i not in dropped) for i in range(d.num_layers)))
        self.validate(s)
        return s

    def uniform_at_ratio(self, ratio: float, mode: str = "mlp") -> Subnet:
        """The uniform subnet whose decoder-param ratio is nearest ``ratio``.

        mode="mlp" cuts only neurons (attention kept), "both" cuts heads and neurons by the
        same fraction, "layers" drops the last layers first (use a ranking for a smarter order).
        """
        if not 0 < ratio <= 1:
            raise SubnetError(f"ratio must be in (0, 1], got {ratio}")
        d = self.dims
        cands: list[Subnet] = []
        if mode == "mlp":
            cands = [self.uniform(neurons=n) for n in self.neuron_choices]
        elif mode == "both":
            for kv in range(1, d.num_kv_heads + 1):
                for n in self.neuron_choices:
                    cands.append(self.uniform(kv, n))
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
            layers.append(LayerChoice(int(rng.integers(1, d.num_kv_heads + 1)), int(rng.choice(self.neuron_choices)), keep))
        if not any(c.keep for c in layers):
            layers[int(rng.integers(d.num_layers))] = LayerChoice(layers[0].kv_groups, layers[0].neurons, True)
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

    # -- optimiser encoding --------------------------------------------------------------------
    @property
    def n_var(self) -> int:
        return 3 * self.dims.num_layers

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        L = self.dims.num_layers
        xl = np.tile([1, 1, 0 if self.allow_layer_drop else 1], L)
        xu = np.tile([self.dims.num_kv_heads, self.n_blocks, 1], L)
        return xl.astype(int), xu.astype(int)

    def encode(self, subnet: Subnet) -> np.ndarray:
        self.validate(subnet)
        out = []
        for c in subnet.layers:
            out += [c.kv_groups, self.neuron_choices.index(c.neurons) + 1, int(c.keep)]
        return np.asarray(out, dtype=int)

    def decode(self, x: Iterable[int]) -> Subnet:
        x = np.asarray(list(x), dtype=float)
        if x.shape != (self.n_var,):
            raise SubnetError(f"encoding must have length {self.n_var} (3 per layer), got shape {x.shape}")
        if not np.all(np.isfinite(x)) or not np.all(x == np.round(x)):
            raise SubnetError("encoding must hold integers")
        xi = x.astype(int)
        xl, xu = self.bounds()
        bad = np.nonzero((xi < xl) | (xi > xu))[0]
        if bad.size:
            j = int(bad[0])
            field = ("kv_groups", "neuron_blocks", "keep")[j % 3]
            raise SubnetError(f"layer {j // 3}: {field}={xi[j]} outside [{xl[j]}, {xu[j]}]")
        layers = tuple(
            LayerChoice(int(xi[3 * i]), self.neuron_choices[int(xi[3 * i + 1]) - 1], bool(xi[3 * i + 2]))
            for i in range(self.dims.num_layers)
        )
        return self.validate(Subnet(layers))

    # -- parameter counts ------------------------------------------------------------------------
    def layer_params(self, kv_groups: int, neurons: int) -> int:
        d = self.dims
        q_out = kv_groups * d.q_per_group * d.head_dim
        kv_out = kv_groups * d.head_dim
        attn = d.hidden * q_out + 2 * d.hidden * kv_out + q_out * d.hidden
        if d.attention_bias:
            attn += q_out + 2 * kv_out
        if d.o_bias:
            attn += d.hidden
        attn += d.num_head_norms * d.head_dim
        mlp = 3 * d.hidden * neurons + (2 * neurons + d.hidden if d.mlp_bias else 0)
        return attn + mlp + d.num_layer_norms * d.hidden

    def params(self, subnet: Subnet, decoder_only: bool = True) -> int:
        """Exact parameter count of the sliced model (decoder layers, or the whole model)."""
        self.validate(subnet)
        dec = sum(self.layer_params(c.kv_groups, c.neurons) for c in subnet.layers if c.keep)
        if decoder_only:
            return dec
        d = self.dims
        return dec + d.vocab * d.hidden * (1 if d.tied_embeddings else 2) + d.hidden

    def ratio(self, subnet: Subnet, decoder_only: bool = True) -> float:
        return self.params(subnet, decoder_only) / self.params(self.dense(), decoder_only)

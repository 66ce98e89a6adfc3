"""Size objectives: exact parameter ratio, weight bytes and KV-cache bytes (no model run needed)."""
from __future__ import annotations

from search_spaces import Subnet

from .base import OBJECTIVES, Context, Objective


@OBJECTIVES.register("params_ratio", kind="size", unit="")
class ParamsRatio(Objective):
    """Decoder parameters kept / dense decoder parameters."""

    name = "params_ratio"

    def __init__(self, decoder_only: bool = True):
        self.decoder_only = decoder_only

    def score(self, subnet: Subnet, ctx: Context) -> float:
        return ctx.space.ratio(subnet, self.decoder_only)


@OBJECTIVES.register("params", kind="size", unit="count")
class Params(Objective):
    name = "params"

    def score(self, subnet: Subnet, ctx: Context) -> float:
        return float(ctx.space.params(subnet, decoder_only=False))


@OBJECTIVES.register("weight_bytes", kind="size", unit="B")
class WeightBytes(Objective):
    """Bytes of all weights at ``bytes_per_param`` (2 for bf16/fp16)."""

    name = "weight_bytes"

    def __init__(self, bytes_per_param: float = 2.0):
        self.bytes_per_param = bytes_per_param

    def score(self, subnet: Subnet, ctx: Context) -> float:
        return ctx.space.params(subnet, decoder_only=False) * self.bytes_per_param


@OBJECTIVES.register("kv_cache_bytes", kind="size", unit="B")
class KVCacheBytes(Objective):
    """KV-cache bytes for ``batch`` sequences of ``context`` tokens: 2 (K,V) x groups x head_dim per kept layer."""

    name = "kv_cache_bytes"

    def __init__(self, context: int = 2048, batch: int = 1, bytes_per_value: float = 2.0):
        self.context, self.batch, self.bytes_per_value = context, batch, bytes_per_value

    def score(self, subnet: Subnet, ctx: Context) -> float:
        hd = ctx.space.dims.head_dim
        per_token = sum(2 * c.kv_groups * hd for c in subnet.layers if c.keep)
        return per_token * self.context * self.batch * self.bytes_per_value


@OBJECTIVES.register("stored_params", kind="size", unit="count")
class StoredParams(Objective):
    """Parameters stored when every dropped layer comes back as a FlexiGPT replacement block
    (:mod:`nas_llm.model.flexi`): the subnet's own parameters, plus per dropped layer its adapters,
    norm vectors and normalisation -- the block it shares is stored once, already counted."""

    name, unit = "stored_params", "count"

    def __init__(self, rank: int | str = 32, norm: str = "lsq"):
        from nas_llm.model.shared_block import role_rank, check_choice, NORMS

        role_rank(rank, (1, 1))
        check_choice("norm", norm, NORMS)
        self.rank, self.norm = rank, norm

    def score(self, subnet: Subnet, ctx: Context) -> float:
        from nas_llm.model.shared_block import extra_params

        dropped = sum(1 for c in subnet.layers if not c.keep)
        return float(ctx.space.params(subnet, decoder_only=False) + dropped * extra_params(ctx.space.dims, self.rank, self.norm))

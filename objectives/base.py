"""The objective interface: a name, a direction, and ``score(subnet, ctx) -> float``.

A user objective is ten lines::

    from objectives import Objective, OBJECTIVES

    @OBJECTIVES.register("kv_heads")
    class KVHeads(Objective):
        name = "kv_heads"
        def score(self, subnet, ctx):
            return sum(c.kv_groups for c in subnet.layers if c.keep)

or ``--objectives perplexity,my_pkg.metrics:KVHeads`` by import path. Any objective is also
a constraint (:class:`Constraint`): ``latency_ms <= 30``, ``params_ratio in [0.7, 0.8]``.
"""
from __future__ import annotations

import math
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch.nn as nn

from nas_llm.errors import ConfigError, ObjectiveTypeError, ObjectiveValueError
from search_spaces import Plan, Ranking, Subnet, SubnetSpace

from search_spaces.registry import Registry


@dataclass
class Context:
    """What objectives see: the dense model, its tokenizer, the space and the importance ranking.

    ``cache`` is a scratch dict objectives may use for data that is expensive to rebuild
    (tokenised text, cached hidden states, lookup tables). ``progress``: whether objectives may show
    progress bars for their set-up work (the CLI's ``--no-progress`` turns them off).
    """

    model: nn.Module
    tokenizer: Any
    space: SubnetSpace
    ranking: Ranking
    device: str = "cpu"
    cache: dict = field(default_factory=dict)
    progress: bool = True

    def plan(self, subnet: Subnet) -> Plan:
        return self.ranking.resolve(self.space.validate(subnet))

    @contextmanager
    def masked(self, subnet: Subnet) -> Iterator[nn.Module]:
        from nas_llm.model.masking import masked

        with masked(self.model, self.plan(subnet)) as m:
            yield m

    def sliced(self, subnet: Subnet) -> nn.Module:
        from nas_llm.model.slicing import slice_model

        return slice_model(self.model, self.plan(subnet), subnet=subnet)


class Objective:
    """Subclass and implement :meth:`score`. ``direction`` is "minimize" or "maximize"."""

    name: str = "objective"
    direction: str = "minimize"
    unit: str = ""

    def setup(self, ctx: Context) -> None:
        """Called once before the first score (load data, build tables). Optional."""

    def score(self, subnet: Subnet, ctx: Context) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def at_fidelity(self, fidelity: float) -> "Objective":
        """A cheaper/more precise variant (fraction of the full budget, 0 < f <= 1). Default: itself."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, direction={self.direction!r})"


def finite_float(v: Any, who: str, fix: str, subnet: Subnet) -> float:
    """``v`` as a finite float; otherwise an error naming ``who`` returned it and how to fix it."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise ObjectiveTypeError(f"{who} returned {v!r}; {fix}") from None
    if math.isnan(v) or math.isinf(v):
        raise ObjectiveValueError(f"{who} returned {v} for subnet {subnet.summary()}")
    return v


def checked_score(obj: Objective, subnet: Subnet, ctx: Context) -> float:
    """Score and validate: a NaN, infinite or non-number result is an error naming the objective."""
    return finite_float(obj.score(subnet, ctx), f"objective {obj.name!r}", "score() must return a float", subnet)


class FunctionObjective(Objective):
    """Wraps ``fn(subnet, ctx) -> float`` so plain functions are objectives too."""

    def __init__(self, fn: Callable[[Subnet, Context], float], name: str | None = None, direction: str = "minimize"):
        self.fn, self.name, self.direction = fn, name or fn.__name__, direction

    def score(self, subnet: Subnet, ctx: Context) -> float:
        return self.fn(subnet, ctx)


OBJECTIVES: Registry = Registry("objective")


def get_objective(spec: "str | Objective | Callable", **kwargs: Any) -> Objective:
    """An objective from a registered name, an import path, an instance, a class or a function."""
    if isinstance(spec, Objective):
        return spec
    obj = OBJECTIVES.resolve(spec) if isinstance(spec, str) else spec
    if isinstance(obj, type) and issubclass(obj, Objective):
        inst = obj(**kwargs)
    elif isinstance(obj, Objective):
        inst = obj
    elif callable(obj):
        inst = FunctionObjective(obj, name=spec.rsplit(":", 1)[-1] if isinstance(spec, str) else None)
    else:
        raise ObjectiveTypeError(f"{spec!r} is not an Objective, an Objective class or a function")
    if inst.direction not in ("minimize", "maximize"):
        raise ConfigError(f"objective {inst.name!r}: direction must be 'minimize' or 'maximize', got {inst.direction!r}")
    return inst


@dataclass(frozen=True)
class Constraint:
    """``lo <= objective <= hi``; :meth:`violation` is pymoo's G (<= 0 feasible)."""

    objective: str
    lo: float | None = None
    hi: float | None = None

    def violation(self, value: float) -> float:
        g = -math.inf
        if self.lo is not None:
            g = max(g, self.lo - value)
        if self.hi is not None:
            g = max(g, value - self.hi)
        return g

    @classmethod
    def parse(cls, text: str) -> "Constraint":
        """``name<=x``, ``name>=x``, ``name in [a,b]``."""
        t = text.replace(" ", "")
        m = re.fullmatch(r"([\w.:]+)in\[([^,\]]+),([^\]]+)\]", t)
        try:
            if m:
                lo, hi = float(m.group(2)), float(m.group(3))
                if lo > hi:
                    raise ConfigError(f"constraint {text!r}: lower bound {lo} > upper bound {hi}")
                return cls(m.group(1), lo, hi)
            m = re.fullmatch(r"([\w.:]+)(<=|>=)(.+)", t)
            if m:
                v = float(m.group(3))
                return cls(m.group(1), None, v) if m.group(2) == "<=" else cls(m.group(1), v, None)
        except ValueError as e:
            if "constraint" in str(e):
                raise
            raise ConfigError(f"constraint {text!r}: bound is not a number") from None
        raise ConfigError(f"cannot parse constraint {text!r}; use 'name<=x', 'name>=x' or 'name in [a,b]'")

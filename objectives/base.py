"""The objective interface: a name, a direction, and ``score(subnet, ctx) -> float``.

A user objective is ten lines::

    from objectives import Objective, OBJECTIVES

    @OBJECTIVES.register("kv_heads", kind="size")
    class KVHeads(Objective):
        name = "kv_heads"
        def score(self, subnet, ctx):
            return sum(c.kv_groups for c in subnet.layers if c.keep)

or ``--objectives perplexity,my_pkg.metrics:KVHeads`` by import path. Any objective is also
a constraint (:class:`Constraint`): ``latency <= 30``, ``params_ratio in [0.7, 0.8]``.

What an objective *is* is declared where it is registered, as lm-eval's ``register_metric(higher_is_better=...)``
(:class:`Traits`: ``kind`` quality/latency/size/other, ``log_scale``, ``unit``, ``measured``), stored in
run.json, and read by every consumer (constraint pre-check, knee, report axes, re-scoring after
reformation) instead of guessing from the name.
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

KINDS = ("quality", "latency", "size", "other")
TRAITS = ("kind", "log_scale", "unit", "measured")


@dataclass(frozen=True)
class Traits:
    """What an objective is, for the code that consumes its values.

    ``kind``: "quality" (re-scored on a reformed model, the y of the front), "latency" and "size"
    (grow with the subnet: constraints on them are checked against the smallest and the dense subnet
    before a search; reformation changes no shape, so their values carry over), or "other".
    ``log_scale``: compared on a log scale (knee, crowding), e.g. perplexity spanning 20..1e9.
    ``unit``: shown on axes and in model cards. ``measured``: measured on hardware (True) or
    predicted/computed (False), so a report never calls an estimate "measured".
    """

    kind: str = "other"
    log_scale: bool = False
    unit: str = ""
    measured: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"objective trait kind={self.kind!r} is not one of {', '.join(map(repr, KINDS))}")
        for k in ("log_scale", "measured"):
            if not isinstance(getattr(self, k), bool):
                raise ConfigError(f"objective trait {k}={getattr(self, k)!r} must be True or False")
        if not isinstance(self.unit, str):
            raise ConfigError(f"objective trait unit={self.unit!r} must be a string such as 'ms' or ''")

    @classmethod
    def of(cls, obj: Any) -> "Traits":
        """The traits an objective (instance, class or registered function) declares; defaults where it does not."""
        return cls(**{k: getattr(obj, k) for k in TRAITS if hasattr(obj, k)})

    @classmethod
    def of_name(cls, name: str) -> "Traits":
        """The traits registered under ``name`` (run.json files written before traits existed); unknown -> "other"."""
        return cls.of(OBJECTIVES.resolve(name)) if name in OBJECTIVES else cls()

    @classmethod
    def of_entry(cls, entry: "dict[str, Any] | str") -> "Traits":
        """The traits of one run.json ``objectives`` entry: stored ones, else the registry's by name."""
        if isinstance(entry, dict) and "kind" in entry:
            return cls(**{k: entry[k] for k in TRAITS if k in entry})
        return cls.of_name(entry["name"] if isinstance(entry, dict) else str(entry))

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in TRAITS}


class ObjectiveRegistry(Registry):
    """The objective registry: traits given to ``register`` are checked before they are set."""

    def register(self, name: str | None = None, **traits: Any):
        unknown = sorted(set(traits) - set(TRAITS))
        if unknown:
            raise ConfigError(f"objective {name!r}: unknown trait {unknown[0]!r}; objective traits are {', '.join(TRAITS)}")
        try:
            Traits(**traits)
        except ConfigError as e:
            raise ConfigError(f"objective {name!r}: {e}") from None
        return super().register(name, **traits)


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
    """Subclass and implement :meth:`score`. ``direction`` is "minimize" or "maximize".

    The :class:`Traits` (``kind``, ``log_scale``, ``unit``, ``measured``) are normally given to
    ``OBJECTIVES.register``; an objective used by import path declares them as class attributes.
    """

    name: str = "objective"
    direction: str = "minimize"
    kind: str = "other"
    log_scale: bool = False
    unit: str = ""
    measured: bool = True
    import_path: str | None = None  # set by get_objective when the objective was given as "pkg.mod:Name"

    def setup(self, ctx: Context) -> None:
        """Called once before the first score (load data, build tables). Optional."""

    def score(self, subnet: Subnet, ctx: Context) -> float:  # pragma: no cover - interface
        raise NotImplementedError

    def at_fidelity(self, fidelity: float) -> "Objective":
        """A cheaper/more precise variant (fraction of the full budget, 0 < f <= 1). Default: itself."""
        return self

    def score_model(self, model: nn.Module, ctx: Context) -> float:
        """The value of an already-built model (e.g. a reformed one, whose weights no subnet describes).

        Optional: ``nas-llm reform`` re-scores quality objectives through it; one without it keeps an
        empty ``NAME_reformed`` column.
        """
        raise NotImplementedError(f"objective {self.name!r} cannot score a built model (no score_model)")

    @property
    def traits(self) -> Traits:
        return Traits.of(self)

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
        for k in TRAITS:  # traits a registered function was given
            if hasattr(fn, k):
                setattr(self, k, getattr(fn, k))

    def score(self, subnet: Subnet, ctx: Context) -> float:
        return self.fn(subnet, ctx)


OBJECTIVES: ObjectiveRegistry = ObjectiveRegistry("objective")


def can_score_model(obj: Objective) -> bool:
    """Whether ``obj`` implements :meth:`Objective.score_model`."""
    return getattr(type(obj), "score_model", Objective.score_model) is not Objective.score_model


def _check_signature(fn: Callable, spec: Any) -> None:
    """A function objective is called as ``fn(subnet, ctx)``: refuse one that cannot be, naming it."""
    import inspect

    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise ObjectiveTypeError(f"{spec!r} is not an objective: a function objective is called as fn(subnet, ctx), "
                                 f"and {getattr(fn, '__name__', fn)}{inspect.signature(fn)} cannot be") from None
    except ValueError:  # a builtin without a signature: let the call decide
        pass


def get_objective(spec: "str | Objective | Callable", **kwargs: Any) -> Objective:
    """An objective from a registered name, an import path, an instance, a class or a function."""
    obj = OBJECTIVES.resolve(spec) if isinstance(spec, str) else spec
    if isinstance(obj, type) and issubclass(obj, Objective):
        inst = obj(**kwargs)
    elif isinstance(obj, Objective):
        inst = obj
    elif callable(obj):
        _check_signature(obj, spec)
        inst = FunctionObjective(obj, name=spec.rsplit(":", 1)[-1] if isinstance(spec, str) else None)
    else:
        raise ObjectiveTypeError(f"{spec!r} is not an Objective, an Objective class or a function")
    if inst.direction not in ("minimize", "maximize"):
        raise ConfigError(f"objective {inst.name!r}: direction must be 'minimize' or 'maximize', got {inst.direction!r}")
    try:
        Traits.of(inst)  # an import-path objective's class attributes get the checks registration gives
    except ConfigError as e:
        raise ConfigError(f"objective {inst.name!r}: {e}") from None
    if isinstance(spec, str) and spec not in OBJECTIVES:
        inst.import_path = spec
    return inst


def describe_objective(obj: Objective) -> dict[str, Any]:
    """The run.json ``objectives`` entry of ``obj``: name, direction, traits, the import path it came from and,
    when the objective has a ``settings()`` method, those settings (report and select show them)."""
    out = {"name": obj.name, "direction": obj.direction, **obj.traits.to_dict()}
    if obj.import_path:
        out["path"] = obj.import_path
    settings = getattr(obj, "settings", None)
    if callable(settings):  # how the value is obtained, e.g. the runtime, type and threads of a latency
        out["settings"] = settings()
    return out


def finite_number(s: str, what: str, why: str = "", minimum: float | None = None, why_finite: str = "") -> float:
    """``float(s)``, refused with a :class:`ConfigError` naming ``what`` unless finite (and ``>= minimum``)."""
    try:
        v = float(s)
    except ValueError:
        raise ConfigError(f"{what} {s.strip()!r} is not a number{why}") from None
    if not math.isfinite(v):
        raise ConfigError(f"{what} {s.strip()} is not a finite number{why_finite or why}")
    if minimum is not None and v < minimum:
        raise ConfigError(f"{what} {s.strip()} must be >= {minimum:g}{why}")
    return v


def _bound(s: str, text: str) -> float:
    return finite_number(s, f"constraint {text!r}: bound", why_finite="; a NaN or infinite bound would disable the limit")


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
        """``name<=x``, ``name>=x``, ``name in [a,b]``; bounds must be finite numbers (NaN would disable the limit)."""
        t = text.replace(" ", "")
        m = re.fullmatch(r"([\w.:]+)in\[([^,\]]+),([^\]]+)\]", t)
        if m:
            lo, hi = _bound(m.group(2), text), _bound(m.group(3), text)
            if lo > hi:
                raise ConfigError(f"constraint {text!r}: lower bound {lo} > upper bound {hi}")
            return cls(m.group(1), lo, hi)
        m = re.fullmatch(r"([\w.:]+)(<=|>=)(.+)", t)
        if m:
            v = _bound(m.group(3), text)
            return cls(m.group(1), None, v) if m.group(2) == "<=" else cls(m.group(1), v, None)
        raise ConfigError(f"cannot parse constraint {text!r}; use 'name<=x', 'name>=x' or 'name in [a,b]'")

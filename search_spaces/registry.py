"""One registry type for every plug-in kind: families, objectives, latency predictors, baselines, drivers.

Modelled on lm-eval's registries: register by decorator (with traits declared right there), or
lazily by import path so a heavy module is imported only when its entry is used; a name registered
twice is an error (two plug-ins silently shadowing each other is the worst kind of bug); an unknown
name says "did you mean" and lists what exists; ``"pkg.module:Name"`` (or ``"path/file.py:Name"``)
resolves anything importable without registering it.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from nas_llm.errors import ConfigError, NasLLMError, PluginImportError

T = TypeVar("T")


class UnknownNameError(NasLLMError, KeyError):
    """A registry lookup of a name nobody registered (the message says what exists)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class _Lazy:
    """A registered ``"pkg.mod:Attr"`` that is imported on first use."""

    def __init__(self, path: str):
        self.path = path


class Registry(Generic[T]):
    """``Registry("objective", base=Objective)``: ``base`` (optional) is checked on registration."""

    def __init__(self, kind: str, base: type | None = None):
        self.kind, self.base = kind, base
        self._items: dict[str, Any] = {}

    # -- registration -----------------------------------------------------------------------
    def register(self, name: str | None = None, **traits: Any) -> Callable[[T], T]:
        """Decorator: ``@OBJECTIVES.register("my_metric", kind="quality")`` on a class or factory.

        ``traits`` become class attributes of the registered object (what consumers read instead
        of guessing from the name), set before the class is stored.
        """
        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__  # type: ignore[attr-defined]
            self._check_new(key, obj)  # refuse before touching the class
            for k, v in traits.items():
                setattr(obj, k, v)
            self.add(key, obj)
            return obj
        return deco

    def add(self, name: str, obj: Any) -> None:
        """Register ``obj`` (or a lazy ``"pkg.mod:Attr"`` string) under ``name``; a repeated name is an error."""
        self._check_new(name, obj)
        self._items[name] = _Lazy(obj) if isinstance(obj, str) else obj

    def _check_new(self, name: str, obj: Any) -> None:
        if name in self._items and self._items[name] is not obj:
            raise ConfigError(f"{self.kind} {name!r} is registered twice ({self._describe(self._items[name])} and "
                              f"{self._describe(obj)}); choose another name")
        if self.base is not None and isinstance(obj, type) and not issubclass(obj, self.base):
            raise ConfigError(f"{self.kind} {name!r}: {obj.__name__} is not a subclass of {self.base.__name__}")

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests and notebooks that re-register a changed class)."""
        self._items.pop(name, None)

    # -- lookup -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def items(self) -> list[tuple[str, Any]]:
        return [(n, self.resolve(n)) for n in self.names()]

    def resolve(self, name: str) -> Any:
        """The registered object, or the object behind an import path ``pkg.module:Name``."""
        if name in self._items:
            obj = self._items[name]
            if isinstance(obj, _Lazy):
                obj = import_path(obj.path, self.kind)
                self._items[name] = obj
            return obj
        if ":" in name:
            return import_path(name, self.kind)
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}; "
                               f"or give an import path 'package.module:Name'.")

    @staticmethod
    def _describe(obj: Any) -> str:
        if isinstance(obj, _Lazy):
            return obj.path
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__name__)}"


def import_path(path: str, kind: str = "object") -> Any:
    """Import ``"pkg.module:Name"`` (also ``"path/to/file.py:Name"``) with a clear error."""
    mod_name, _, attr = path.partition(":")
    if not mod_name or not attr:
        raise ConfigError(f"{kind} import path must look like 'package.module:Name', got {path!r}")
    try:
        if mod_name.endswith(".py"):
            module = _import_file(Path(mod_name))
        else:
            module = importlib.import_module(mod_name)
    except ImportError as e:
        raise PluginImportError(f"cannot import the module of {kind} {path!r}: {e}") from e
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise PluginImportError(f"module {mod_name!r} has no attribute {attr!r} (from {kind} path {path!r})") from None
    return obj


def _import_file(p: Path) -> Any:
    """The module of a ``.py`` file, executed once: a second resolution (validation, then the search; a
    resume) returns the same module, so what it registers is not registered twice."""
    loaded = sys.modules.get(p.stem)
    if loaded is not None and getattr(loaded, "__file__", None) and Path(loaded.__file__).resolve() == p.resolve():
        return loaded
    spec = importlib.util.spec_from_file_location(p.stem, p)
    if spec is None or not p.is_file():
        raise ImportError(f"no file {p}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[p.stem] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


__all__ = ["Registry", "UnknownNameError", "import_path"]

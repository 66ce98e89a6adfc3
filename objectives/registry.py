"""A small registry: register by decorator or refer by ``"pkg.module:Name"``; unknown names say "did you mean".

Shared by objectives and latency predictors (one instance each), like lm-eval's task registry.
"""
from __future__ import annotations

import difflib
import importlib
import importlib.util
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Any] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator: ``@OBJECTIVES.register("my_metric")`` on a class or factory."""
        def deco(obj: T) -> T:
            key = name or getattr(obj, "name", None) or obj.__name__  # type: ignore[attr-defined]
            self._items[key] = obj
            return obj
        return deco

    def add(self, name: str, obj: Any) -> None:
        self._items[name] = obj

    def names(self) -> list[str]:
        return sorted(self._items)

    def resolve(self, name: str) -> Any:
        """The registered object, or the object behind an import path ``pkg.module:Name``."""
        if name in self._items:
            return self._items[name]
        if ":" in name:
            return import_path(name, self.kind)
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise KeyError(f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(self.names())}; "
                       f"or give an import path 'package.module:Name'.")


def import_path(path: str, kind: str = "object") -> Any:
    """Import ``"pkg.module:Name"`` (also ``"path/to/file.py:Name"``) with a clear error."""
    mod_name, _, attr = path.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"{kind} import path must look like 'package.module:Name', got {path!r}")
    try:
        if mod_name.endswith(".py"):
            import sys
            from pathlib import Path

            p = Path(mod_name)
            spec = importlib.util.spec_from_file_location(p.stem, p)
            if spec is None or not p.is_file():
                raise ImportError(f"no file {p}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[p.stem] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ImportError(f"cannot import the module of {kind} {path!r}: {e}") from e
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ImportError(f"module {mod_name!r} has no attribute {attr!r} (from {kind} path {path!r})") from None
    return obj

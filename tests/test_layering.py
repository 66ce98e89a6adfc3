"""Data flows model -> space -> objectives -> search -> front -> reform -> export: no module reaches back.

An allow-list: each layer names the packages of *ours* it may import (besides itself). The scan reads
every import statement, also the ones inside functions, and fails naming the file and the line.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("nas_llm", "search_spaces", "objectives")
# layer (a package or module of ours)  ->  what it may import besides itself
ALLOWED = {
    "nas_llm.errors": (),
    "search_spaces": ("nas_llm.errors",),
    "nas_llm.model": ("nas_llm.errors", "search_spaces"),
    "objectives": ("nas_llm.errors", "search_spaces", "nas_llm.model"),
    "nas_llm.evaluate": ("nas_llm.errors", "search_spaces", "nas_llm.model"),
    "nas_llm.baselines": ("nas_llm.errors", "search_spaces", "nas_llm.model"),
    "nas_llm.front": ("nas_llm.errors",),
    "nas_llm.run": ("nas_llm.errors", "search_spaces", "nas_llm.model"),
    "nas_llm.search": ("nas_llm.errors", "search_spaces", "nas_llm.model", "objectives", "nas_llm.front", "nas_llm.run",
                       "nas_llm.baselines"),
    "nas_llm.select": ("nas_llm.errors", "search_spaces", "nas_llm.model", "objectives", "nas_llm.front", "nas_llm.run"),
    "nas_llm.reform": ("nas_llm.errors", "search_spaces", "nas_llm.model", "objectives", "nas_llm.front", "nas_llm.run",
                       "nas_llm.select"),
    "nas_llm.deploy": ("nas_llm.errors", "search_spaces", "nas_llm.model", "objectives", "nas_llm.front", "nas_llm.run",
                       "nas_llm.select", "nas_llm.reform"),
    "nas_llm.report": ("nas_llm.errors", "search_spaces", "nas_llm.model", "objectives", "nas_llm.front", "nas_llm.run",
                       "nas_llm.select"),
}
ALWAYS = ("nas_llm",)  # the package itself (its __init__ re-exports lazily, importing nothing)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import; relative imports are resolved against the file's package."""
    pkg = list(path.relative_to(ROOT).parent.parts) if path.is_relative_to(ROOT) else []
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            base = pkg[: len(pkg) - (node.level - 1)]
            mods = [node.module] if node.module else [a.name for a in node.names]
            out += [(node.lineno, ".".join([*base, m])) for m in mods]
    return out


def _within(mod: str, prefix: str) -> bool:
    return mod == prefix or mod.startswith(prefix + ".")


def layer_files(layer: str) -> list[Path]:
    p = ROOT / Path(*layer.split("."))
    return sorted(p.rglob("*.py")) if p.is_dir() else [p.with_suffix(".py")]


def violations(layer: str, files: list[Path]) -> list[str]:
    allowed = (layer, *ALLOWED[layer])
    bad = []
    for f in files:
        for line, mod in imports(f):
            if not mod.split(".")[0] in OURS or mod in ALWAYS:
                continue
            if not any(_within(mod, a) for a in allowed):
                bad.append(f"{f.relative_to(ROOT) if f.is_relative_to(ROOT) else f}:{line} imports {mod}")
    return bad


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(layer):
    files = layer_files(layer)
    assert files and all(f.is_file() for f in files), f"layer {layer} has no files"
    bad = violations(layer, files)
    assert not bad, f"{layer} may import only {ALLOWED[layer]}; move the shared code down a layer:\n" + "\n".join(bad)


def test_every_module_belongs_to_a_layer():
    """A new module must be placed in the table (the CLI is the top: it may import everything)."""
    loose = []
    for f in sorted((ROOT / "nas_llm").rglob("*.py")) + sorted((ROOT / "objectives").rglob("*.py")) + sorted((ROOT / "search_spaces").rglob("*.py")):
        mod = ".".join(f.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if mod in ("nas_llm",) or _within(mod, "nas_llm.cli"):
            continue
        if not any(_within(mod, layer) for layer in ALLOWED):
            loose.append(mod)
    assert not loose, f"modules in no layer of tests/test_layering.py ALLOWED: {loose}"


def test_the_scan_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from nas_llm.reform import closed_form\n")
    assert imports(f) == [(2, "nas_llm.reform")]


def test_objectives_importing_the_search_fails(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("def g():\n    from nas_llm.search import SearchProblem\n    from nas_llm.model.data import tokenize\n")
    assert violations("objectives", [f]) == [f"{f}:2 imports nas_llm.search"]


def test_the_scan_resolves_relative_imports():
    f = ROOT / "nas_llm" / "search" / "population.py"
    assert all(not mod.startswith(".") for _, mod in imports(f))

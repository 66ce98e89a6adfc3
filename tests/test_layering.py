"""Data flows model -> space -> objectives -> search -> front -> reform -> export: no module reaches back.

Scans every import statement (also the ones inside functions) of the lower stages and fails on an
import of a later stage, naming the file and line.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LATER = {  # package -> modules of later stages it must not import
    "search_spaces": ("objectives", "nas_llm.search", "nas_llm.front", "nas_llm.reform", "nas_llm.export",
                      "nas_llm.select", "nas_llm.report", "nas_llm.cli"),
    "objectives": ("nas_llm.search", "nas_llm.front", "nas_llm.reform", "nas_llm.export", "nas_llm.export_cli",
                   "nas_llm.select", "nas_llm.report", "nas_llm.cli", "nas_llm.reform_cli"),
}


def imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


@pytest.mark.parametrize("package", sorted(LATER))
def test_no_stage_imports_a_later_one(package):
    bad = [f"{f.relative_to(ROOT)}:{line} imports {mod}"
           for f in sorted((ROOT / package).rglob("*.py")) for line, mod in imports(f)
           if any(mod == x or mod.startswith(x + ".") for x in LATER[package])]
    assert not bad, "later-stage imports (move the shared code down a stage):\n" + "\n".join(bad)


def test_the_scan_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def g():\n    from nas_llm.reform import closed_form\n")
    assert imports(f) == [(2, "nas_llm.reform")]

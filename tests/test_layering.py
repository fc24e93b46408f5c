"""The layers of docs/ARCHITECTURE.md, enforced: who may import whom, no cycles, nothing imports the CLI,
and the pure layers import no SQLite, pandas or gradio."""
import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# comparisons' layers, bottom up. A module may import its own layer and the layers listed for it.
ALLOWED = {
    "errors": set(),
    "files": set(),
    "core": {"errors", "files"},
    "results": {"errors", "files", "core"},
    "analysis": {"errors", "core"},
    "workflows": {"errors", "files", "core", "results", "analysis"},
    "specs": {"errors", "core"},
    "cli": {"errors", "files", "core", "results", "analysis", "workflows", "specs"},
    "package": {"errors", "core", "results"},   # comparisons/__init__.py re-exports a few names
    "main": {"cli"},                            # comparisons/__main__.py
}
# Third-party or stdlib roots a layer must never import.
FORBIDDEN_ROOTS = {
    "sampler_lib": {"gradio", "sqlite3", "pandas", "comparisons", "ui", "app"},
    "core": {"gradio", "sqlite3", "pandas", "ui", "app"},
    "analysis": {"gradio", "sqlite3", "pandas", "ui", "app", "os", "shutil", "tempfile", "pathlib"},
    "results": {"gradio", "ui", "app"},
    "workflows": {"gradio", "ui", "app"},
    "specs": {"gradio", "sqlite3", "pandas", "ui", "app"},
    "cli": {"gradio", "ui", "app"},
}
PROJECT = ("comparisons", "sampler_lib", "ui", "app")


def module_name(path):
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules():
    files = [ROOT / "app.py"] + [p for d in ("comparisons", "sampler_lib", "ui") for p in (ROOT / d).rglob("*.py")]
    return {module_name(p): p for p in files}


MODULES = modules()


def imports_of(name, path):
    """Every module `name` imports (at any depth in the file), resolved to absolute names."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield sub if sub in MODULES else target


def layer(name):
    """The layer of a comparisons module ('core', 'workflows', ...)."""
    parts = name.split(".")
    if parts == ["comparisons"]:
        return "package"
    if parts[1] == "__main__":
        return "main"
    return parts[1]


GRAPH = {name: {m for m in imports_of(name, path) if m.split(".")[0] in PROJECT and m in MODULES}
         for name, path in MODULES.items()}


def test_every_comparisons_module_has_a_layer():
    unknown = {n for n in MODULES if n.startswith("comparisons") and layer(n) not in ALLOWED}
    assert not unknown, f"modules outside the known layers (add them to docs/ARCHITECTURE.md and here): {unknown}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if n.startswith("comparisons")))
def test_comparisons_imports_only_the_layers_below(name):
    mine = layer(name)
    bad = {m for m in GRAPH[name] if m.startswith("comparisons")
           and layer(m) != mine and layer(m) not in ALLOWED[mine]}
    assert not bad, f"{name} ({mine}) may import {sorted(ALLOWED[mine] | {mine})}, not {sorted(bad)}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_forbidden_roots(name):
    key = "sampler_lib" if name.startswith("sampler_lib") else layer(name) if name.startswith("comparisons.") else None
    if key not in FORBIDDEN_ROOTS:
        return
    roots = {m.split(".")[0] for m in imports_of(name, MODULES[name])}
    assert not roots & FORBIDDEN_ROOTS[key], f"{name} imports {sorted(roots & FORBIDDEN_ROOTS[key])}"


def test_nothing_imports_the_cli_but_main():
    importers = {n for n, deps in GRAPH.items() if "comparisons.cli" in deps}
    assert importers == {"comparisons.__main__"}, importers


def test_no_import_cycles():
    """Function-level imports count too: a cycle dodged by importing inside a function is still a cycle."""
    # A package's __init__ is what importing any of its modules runs first; its own re-exports are not an edge.
    edges = {n: {m for m in deps if not n.startswith(m + ".")} for n, deps in GRAPH.items()}
    state, cycles = {}, []

    def visit(n, stack):
        state[n] = "open"
        for m in sorted(edges.get(n, ())):
            if state.get(m) == "open":
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = "done"

    for n in sorted(edges):
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles


def test_app_code_lives_in_ui_not_in_the_library():
    """Form parsing and the hosted demo's limits are the app's: comparisons has no inputs or limits module."""
    assert not (ROOT / "comparisons" / "inputs.py").exists() and not (ROOT / "comparisons" / "limits.py").exists()
    assert {"ui.inputs", "ui.limits"} <= set(MODULES)


def test_the_layers_are_documented():
    text = Path(ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for name in ALLOWED:
        if name not in ("package", "main"):
            assert f"`{name}" in text, f"docs/ARCHITECTURE.md does not describe the {name} layer"

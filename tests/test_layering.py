"""The import direction of DESIGN.md §2: sampler_lib is pure torch; comparisons never imports gradio."""
import ast

import pytest

from tests.conftest import ROOT

FORBIDDEN = {
    "sampler_lib": {"gradio", "sqlite3", "pandas", "comparisons", "ui", "app"},
    "comparisons": {"gradio", "ui", "app"},
}


def imported_roots(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package):
    offenders = {f"{p.relative_to(ROOT)}: {name}" for p in (ROOT / package).rglob("*.py")
                 for name in imported_roots(p) if name in FORBIDDEN[package]}
    assert not offenders, sorted(offenders)

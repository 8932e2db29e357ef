"""The package's shape: layers that import downwards only, and no import hidden in a function.

The layers are the import-linter contract in ``pyproject.toml``. An import of
one of our own modules inside a function is how a cycle used to be dodged; it
is allowed only with a comment on its line saying why (an optional dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "flask_maintenance_tasks"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _function_level_imports(path: Path, root: Path = PACKAGE.parent) -> list[str]:
    """``file:line`` of each import of our own package inside a function or method."""
    source = path.read_text()
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom):
                own = inner.level > 0 or (inner.module or "").startswith("flask_maintenance_tasks")
            elif isinstance(inner, ast.Import):
                own = any(a.name.startswith("flask_maintenance_tasks") for a in inner.names)
            else:
                continue
            if own and "#" not in lines[inner.lineno - 1]:
                found.append(f"{path.relative_to(root)}:{inner.lineno}")
    return found


def test_no_module_imports_its_own_package_inside_a_function() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 30

    found = [where for path in modules for where in _function_level_imports(path)]

    assert found == []


def test_the_check_finds_an_import_inside_a_function(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text(
        "def f():\n    from . import store\n    return store\n\n"
        "def g():\n    import flask_maintenance_tasks.store  # optional, says why\n"
    )

    assert _function_level_imports(module, tmp_path) == ["probe.py:2"]


def test_every_layer_imports_only_from_the_layers_below_it() -> None:
    result = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout

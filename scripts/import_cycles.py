"""Print the import cycles of flask_maintenance_tasks (imports under TYPE_CHECKING left out).

    .venv/bin/python scripts/import_cycles.py [CHECKOUT]

CHECKOUT (default: this one) is put first on sys.path, so an older checkout can be measured
with the same script. A cycle is a strongly connected component of the import graph.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grimp


def cycles(package: str = "flask_maintenance_tasks") -> list[list[str]]:
    graph = grimp.build_graph(package, exclude_type_checking_imports=True, cache_dir=None)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent.parent).resolve()
    sys.path.insert(0, str(root))
    found = cycles()
    print(f"{len(found)} import cycle(s)")
    for component in found:
        print(f"  {len(component)} modules: {', '.join(component)}")

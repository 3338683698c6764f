"""The house stays as built: imports go one way between the packages of `lowloss`, and no modules import each
other in a circle.

Every `import` of every module counts, at the top or inside a function, under TYPE_CHECKING or not: a
deferred import is still a dependency. The packages, from the bottom up, are LAYERS; a module may import
its own package and the packages below it.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
LAYERS = (
    "errors",
    "nets",
    "paths",
    "storage",
    "training",
    "evaluate",
    "methods",
    "ensemble",
    "results",
    "tracking",
    "api",
    "cli",
)
"""The packages (and `errors.py`), bottom first: each may import the ones before it, never one after it."""
SHARED = {"lowloss", "lowloss._lazy"}
"""The package itself (its version) and the lazy re-exports of the packages' `__init__`: below every layer."""
TOP = {"lowloss.__main__"}
"""`python -m lowloss`: above every layer."""


def module_sources(root: Path = SOURCE) -> dict[str, str]:
    """Every module of the package under `root`, by dotted name: its source."""
    sources = {}
    for path in sorted((root / "lowloss").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        sources[name] = path.read_text()
    return sources


def imports(name: str, source: str, modules: set[str]) -> set[str]:
    """The lowloss modules that module `name` imports (`from package import module` names the module)."""
    found = set()
    package = name if name in modules and _is_package(name, modules) else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {module for module in found if module in modules and module != name}


def _is_package(name: str, modules: set[str]) -> bool:
    return any(other.startswith(name + ".") for other in modules)


def layer(module: str) -> int:
    """The module's place from the bottom (SHARED below everything, TOP above)."""
    if module in SHARED:
        return -1
    if module in TOP:
        return len(LAYERS)
    return LAYERS.index(module.split(".")[1])


def violations(sources: dict[str, str]) -> list[str]:
    """Upward imports and import circles among `sources`, one line each (none: the house is as built)."""
    modules = set(sources)
    graph = {name: imports(name, source, modules) for name, source in sources.items()}
    problems = [
        f"{name} imports {target}: {LAYERS[layer(target)]} is above {LAYERS[layer(name)]}"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if layer(target) > layer(name)
    ]
    while True:  # every circle: each found one is reported, then cut, and the search goes on
        try:
            graphlib.TopologicalSorter(graph).prepare()
            return problems
        except graphlib.CycleError as error:
            circle = error.args[1]
            problems.append(f"import circle: {' imports '.join(reversed(circle))}")
            graph[circle[1]].discard(circle[0])  # graphlib lists a circle against the import direction


def test_every_module_belongs_to_a_layer():
    unplaced = [name for name in module_sources() if name not in SHARED | TOP and name.split(".")[1] not in LAYERS]
    assert unplaced == []


def test_imports_go_one_way_and_never_in_a_circle():
    assert violations(module_sources()) == []


@pytest.mark.parametrize(
    "module,line,problem",
    [
        (
            "lowloss.nets.spec",
            "from lowloss.methods.registry import METHODS",
            "lowloss.nets.spec imports lowloss.methods.registry: methods is above nets",
        ),
        (
            "lowloss.evaluate.engine",
            "from lowloss.methods import permutation",
            "lowloss.evaluate.engine imports lowloss.methods.permutation: methods is above evaluate",
        ),
        ("lowloss.nets.topology", "    from lowloss.nets.network import Network", "import circle: lowloss.nets."),
    ],
)
def test_a_deliberate_upward_import_or_circle_is_caught(module, line, problem):
    """The check itself fails when a module gains an upward import or closes a circle (here added to a copy of
    the sources, indented lines inside a function)."""
    sources = module_sources()
    addition = f"\n\ndef _added():\n{line}\n" if line.startswith(" ") else f"\n{line}\n"
    sources[module] += addition
    found = violations(sources)
    assert any(problem in violation for violation in found), found

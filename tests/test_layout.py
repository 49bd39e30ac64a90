"""The package's layout: imports run downwards only, and the lower layers know no users.

Every import in ``instrument/`` is read from the source (AST), including imports inside
functions and under ``TYPE_CHECKING``: a cycle hidden in a function still ties two
modules together for a reader, and a type-only import still says who depends on whom.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "instrument"

#: Layers that must not import the parts built on them.
LOWER = (
    "instrument.config",
    "instrument.events",
    "instrument.payloads",
    "instrument._jsonsafe",
    "instrument.delivery",
)
UPPER = (
    "instrument.middleware",
    "instrument.decorators",
    "instrument.cli",
    "instrument.strategies",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(name: str, path: Path) -> Iterator[str]:
    """The kit's modules that *name* imports, anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            # "from . import events" imports the module events; "from .x import name", x.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        yield from (target for target in targets if target in MODULES and target != name)


GRAPH = {name: sorted(set(imported(name, path))) for name, path in MODULES.items()}


def within(name: str, layers: tuple[str, ...]) -> bool:
    return any(name == layer or name.startswith(layer + ".") for layer in layers)


def test_the_walker_sees_relative_imports_inside_functions() -> None:
    assert "instrument.cli.demo" in GRAPH["instrument.cli.main"]  # imported in a function
    assert "instrument.events" in GRAPH["instrument.lifecycle"]  # "from . import events"


def test_no_import_cycles() -> None:
    cycles = []
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in GRAPH[node]:
            if state.get(target) == "open":
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for name in GRAPH:
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_lower_layers_import_none_of_their_users() -> None:
    offending = [
        f"{name} imports {target}"
        for name, targets in GRAPH.items()
        if within(name, LOWER)
        for target in targets
        if within(target, UPPER)
    ]
    assert offending == []


def test_the_middleware_imports_no_broker_client() -> None:
    code = "import sys, instrument.middleware; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not {"kombu", "amqp", "proton", "instrument.cli"} & set(loaded)

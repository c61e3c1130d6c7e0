"""The shape of the code: imports run one way, and the leaves import nothing of ours.

Read from the source (top-level imports only, as Python runs them at import
time), so a new cycle fails here before it fails at start-up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LEAVES = ["app.message", "app.urls", "app.errors", "app.metrics", "app.clock"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[str]]:
    """Map each of our modules to ours that it imports at the top level."""
    files = [ROOT / "config.py", *sorted((ROOT / "app").rglob("*.py"))]
    modules = {_module_name(path): path for path in files}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[
                        : len(package.split(".")) - node.level + 1
                    ]
                    target = ".".join(base + ([node.module] if node.module else []))
                    names = [f"{target}.{a.name}" for a in node.names]
                    found |= {n for n in names if n in modules} or {target}
                else:
                    found.add(node.module or "")
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_our_modules():
    assert _cycle(_imports()) is None


@pytest.mark.parametrize("leaf", LEAVES)
def test_shared_leaves_import_nothing_of_ours(leaf):
    assert _imports()[leaf] == set()


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize(
    ("module", "must_not_import"),
    [
        ("app.handlers", {"app.hosted", "app.endpoint"}),
        ("app.transport", {"app.smtp", "app.maildir", "app.signing"}),
        ("config", {"app", "app.services", "app.ledger"}),
        ("app", {"config"}),
    ],
)
def test_edges_that_must_not_exist(module, must_not_import):
    assert not _imports()[module] & must_not_import


def test_only_the_driver_module_goes_around_sqlalchemy():
    """The raw driver transaction and the SQLite writer lock live in one place."""
    users = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "app").rglob("*.py"))
        if "raw_connection(" in path.read_text() or "fcntl" in path.read_text()
    ]
    assert users == ["app/ledger/driver.py"]

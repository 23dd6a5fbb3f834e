"""``privfed.federated`` by role: who imports whom, read from the source with ``ast``.

Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import privfed.federated

PACKAGE = "privfed.federated"
ROOT = Path(privfed.federated.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


MODULES = {_module(p): p for p in sorted(ROOT.rglob("*.py"))}


def _runtime(tree: ast.Module) -> ast.Module:
    """``tree`` without its ``if TYPE_CHECKING:`` blocks (never run: not a dependency)."""
    tree.body = [
        node
        for node in tree.body
        if not (isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING")
    ]
    return tree


def _imports(module: str) -> set[str]:
    """The modules of this package that ``module`` imports (the package itself left out)."""
    found: set[str] = set()
    for node in ast.walk(_runtime(ast.parse(MODULES[module].read_text()))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from privfed.federated import launcher`` imports a submodule
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in found if name in MODULES and name != PACKAGE}


GRAPH = {module: _imports(module) for module in MODULES}


def _reaches(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_server_and_secagg_do_not_import_each_other() -> None:
    # Prepare
    secagg = {m for m in MODULES if m.startswith(f"{PACKAGE}.secagg")}
    server = f"{PACKAGE}.server"
    # Assert: SecAgg+'s modules never reach the ServerApp's main; the server uses only
    # SecAgg+'s server half, which does not lead back to it
    assert secagg == {f"{PACKAGE}.secagg", f"{PACKAGE}.secagg.hospital", f"{PACKAGE}.secagg.server"}
    assert all(server not in _reaches(m) for m in secagg)
    assert GRAPH[server] & secagg == {f"{PACKAGE}.secagg.server"}


def test_secaggs_hospital_half_and_server_half_are_apart() -> None:
    hospital, server = f"{PACKAGE}.secagg.hospital", f"{PACKAGE}.secagg.server"
    assert server not in _reaches(hospital)
    assert hospital not in _reaches(server)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_itself_through_others(module: str) -> None:
    assert module not in _reaches(module)


def test_launchers_and_the_server_are_apart() -> None:
    """The stage's side (launchers) never loads the ServerApp's code, nor the reverse."""
    launchers = {f"{PACKAGE}.launcher", f"{PACKAGE}.kubernetes", f"{PACKAGE}.federation"}
    server_side = {
        f"{PACKAGE}.server",
        f"{PACKAGE}.recorder",
        f"{PACKAGE}.recorded",
        f"{PACKAGE}.strategies",
        f"{PACKAGE}.secagg.server",
    }
    for launcher in launchers:
        assert not _reaches(launcher) & server_side, launcher
    for module in server_side:
        assert not _reaches(module) & launchers, module


def test_the_strategy_registry_imports_nothing_heavy_at_module_level() -> None:
    import privfed.config.strategy_registry as registry

    tree = ast.parse(Path(registry.__file__).read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module or "" for n in top if isinstance(n, ast.ImportFrom)}
    assert not {n.split(".")[0] for n in names} & {"flwr", "torch", "numpy"}

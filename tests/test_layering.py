"""The architecture, checked from the source: layers import only downwards, no import cycles.

Every ``import`` under ``tuner/`` is read from the AST -- at module level, under
``TYPE_CHECKING`` and inside functions alike -- with no exception list.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tuner"

#: Bottom to top. A package may import its own modules and those of lower layers only.
LAYERS: dict[str, int] = {
    "core": 0,
    "objectives": 1,
    "hardware": 2,
    "backends": 3,
    "search": 3,
    "tuning": 4,
    "fidelity": 4,
    "studies": 5,
    "report": 6,
    "cli": 7,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every tuner module ``name`` imports, with the line (relative imports resolved)."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tuner":
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "tuner":
                continue
            subs = [f"{target}.{a.name}" for a in node.names]
            if not all(s in MODULES for s in subs):
                yield target, node.lineno
            for sub in subs:  # `from tuner.core import _traces` imports that module
                if sub in MODULES:
                    yield sub, node.lineno


MODULES = modules()


def package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_package_has_a_layer() -> None:
    packages = {package_of(m) for m in MODULES} - {None, "__main__"}
    assert packages <= set(LAYERS), f"packages without a layer: {packages - set(LAYERS)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_run_down_the_layers(module: str) -> None:
    own = package_of(module)
    if own in (None, "__main__"):
        return  # the package root re-exports the public names of every layer
    bad = []
    for target, line in imports(module, MODULES[module]):
        other = package_of(target)
        if other is None:
            bad.append(f"line {line}: {target} (the package root sits above every layer)")
        elif other != own and LAYERS[other] >= LAYERS[own]:
            bad.append(f"line {line}: {target} ({other} is not below {own})")
    assert not bad, f"{module} imports upwards or sideways:\n  " + "\n  ".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_other_packages_are_imported_through_their_public_names(module: str) -> None:
    own = package_of(module)
    bad = []
    for target, line in imports(module, MODULES[module]):
        other = package_of(target)
        private = any(p.startswith("_") for p in target.split(".")[2:])
        if other is not None and other != own and private:
            bad.append(f"line {line}: {target}")
    assert not bad, f"{module} reaches into another package's private modules:\n  " + (
        "\n  ".join(bad)
    )


def test_there_are_no_import_cycles() -> None:
    graph = {
        m: {t for t, _ in imports(m, p) if t in MODULES and t != m} for m, p in MODULES.items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append([*path[path.index(t) :], t])
            elif t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n  " + "\n  ".join(" -> ".join(c) for c in cycles)


def test_core_imports_nothing_else_of_tuner() -> None:
    for module, path in MODULES.items():
        if package_of(module) == "core":
            others = {package_of(t) for t, _ in imports(module, path)} - {"core"}
            assert not others, f"{module} imports {others}"

"""The backends' folders keep their layering: what each may import (never tuner.fidelity or
anything above), and no import cycles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tuner

ROOT = Path(tuner.__file__).parent
BACKENDS = ROOT / "backends"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def tuner_imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    """The tuner modules ``path`` imports (``from a.b import c`` counts as ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m == "tuner" or m.startswith("tuner.")}


def backend_files() -> list[Path]:
    return sorted(BACKENDS.rglob("*.py"))


@pytest.mark.parametrize("path", backend_files(), ids=lambda p: module_name(p))
def test_backends_import_only_core_objectives_and_backends(path: Path) -> None:
    # tuner.hardware sits below the backends (tests/test_layering.py): the simulator sizes
    # KV caches and takes its roofline prior from it.
    allowed = ("tuner.core", "tuner.objectives", "tuner.hardware", "tuner.backends")
    for module in tuner_imports(path):
        assert module.startswith(allowed), f"{module_name(path)} imports {module}"


@pytest.mark.parametrize("path", backend_files(), ids=lambda p: module_name(p))
def test_each_backend_module_says_what_it_owns(path: Path) -> None:
    assert ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))), module_name(path)


def test_the_tiers_import_each_other_only_downwards() -> None:
    forbidden = {
        # the shared modules import no tier
        "tuner.backends._": (
            "tuner.backends.simulator",
            "tuner.backends.replay",
            "tuner.backends.live",
        ),
        "tuner.backends.simulator": ("tuner.backends.replay", "tuner.backends.live"),
        "tuner.backends.replay": ("tuner.backends.simulator", "tuner.backends.live"),
        "tuner.backends.live": ("tuner.backends.simulator", "tuner.backends.replay"),
    }
    for path in backend_files():
        name = module_name(path)
        for prefix, banned in forbidden.items():
            if name.startswith(prefix):
                bad = {m for m in tuner_imports(path) if m.startswith(banned)}
                assert not bad, f"{name} imports {sorted(bad)}"


def test_no_module_level_import_cycle_in_backends_or_fidelity() -> None:
    files = backend_files() + sorted((ROOT / "fidelity").rglob("*.py"))
    graph = {module_name(p): tuner_imports(p, top_level_only=True) for p in files}
    for name, imports in graph.items():
        graph[name] = {m for m in imports if m in graph and m != name}

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            assert nxt not in path, f"import cycle: {' -> '.join([*path, nxt])}"
            visit(nxt, [*path, nxt])

    for start in graph:
        visit(start, [start])

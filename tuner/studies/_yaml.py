"""YAML with line numbers: so a bad study file's error points at the key and the line."""

from __future__ import annotations

from typing import Any

import yaml

from tuner.core._errors import ConfigError

Path_ = tuple[str | int, ...]


def load_with_lines(text: str, filename: str = "<study>") -> tuple[Any, dict[Path_, int]]:
    """Parse YAML; also return the 1-based line of every mapping key and sequence item."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark is not None else filename
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    lines: dict[Path_, int] = {}

    def walk(n: yaml.Node | None, path: Path_) -> None:
        if n is None:
            return
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value
                child = (*path, key)
                lines[child] = k.start_mark.line + 1
                walk(v, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                item = (*path, i)
                lines[item] = v.start_mark.line + 1
                walk(v, item)

    walk(node, ())
    return data, lines


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of ``path``, or of its closest parent that has one."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get(())

"""YAML with line numbers: so a bad study file's error points at the key and the line.

Study files are small documents a person writes, so the loader is strict where plain YAML is
silently surprising: a key given twice is an error naming both lines (YAML keeps the last one),
and anchors and aliases are refused (a few hundred bytes of nested aliases can expand to
gigabytes: the "billion laughs").
"""

from __future__ import annotations

from typing import Any

import yaml

from tuner.core import ConfigError

Path_ = tuple[str | int, ...]


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that refuses aliases (and so anchors' reuse) as soon as it meets one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem="anchors and aliases (*name) are not allowed in a study file; "
                "write the values out",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)


def load_with_lines(text: str, filename: str = "<study>") -> tuple[Any, dict[Path_, int]]:
    """Parse YAML; also return the 1-based line of every mapping key and sequence item.

    Raises:
        ConfigError: not valid YAML, an alias, or a key given twice in one mapping.
    """
    try:
        loader = _StrictLoader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
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
            seen: dict[object, int] = {}
            for k, v in n.value:
                key = k.value
                line = k.start_mark.line + 1
                if key in seen:
                    where = ".".join(str(x) for x in (*path, key))
                    raise ConfigError(
                        f"{filename}:{line}: {where}: key {key!r} given twice (first on line "
                        f"{seen[key]}); YAML would silently keep the last one, so remove one"
                    )
                seen[key] = line
                child = (*path, key)
                lines[child] = line
                walk(v, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                item = (*path, i)
                lines[item] = v.start_mark.line + 1
                walk(v, item)

    walk(node, ())
    if node is None:
        return None, lines
    constructor = yaml.SafeLoader("")
    try:
        data = constructor.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark is not None else filename
        raise ConfigError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    finally:
        constructor.dispose()
    return data, lines


def line_of(lines: dict[Path_, int], path: Path_) -> int | None:
    """The line of ``path``, or of its closest parent that has one."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get(())

"""Name look-up shared by the model and GPU tables: normalisation and closest-name errors."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import TypeVar

from tuner.core import ConfigError

T = TypeVar("T")


def normalize(name: str) -> str:
    """Lower-case, drop a ``org/`` prefix and every non-alphanumeric character."""
    return re.sub(r"[^a-z0-9.]", "", name.strip().lower().rsplit("/", 1)[-1])


def lookup(what: str, name: str, table: Mapping[str, T], aliases: Iterable[str] = ()) -> T:
    """``table[normalize(name)]``, or a :class:`ConfigError` listing the closest known names.

    Args:
        what: What is being looked up (``"model"``, ``"GPU"``), for the message.
        name: The name given.
        table: Normalised name -> value.
        aliases: Human-readable known names, offered as suggestions.
    """
    key = normalize(name)
    if key in table:
        return table[key]
    known = sorted(set(aliases))
    by_key = {normalize(k): k for k in known}
    close = difflib.get_close_matches(key, list(by_key), n=5, cutoff=0.4)
    hint = ", ".join(by_key[c] for c in close) if close else ", ".join(known[:8])
    raise ConfigError(f"unknown {what} {name!r}; closest known: {hint}")

"""The base of every component's settings: one frozen model per component, declared once.

A component (the Loop's budgets, each search, each backend, two-tier tuning) keeps its knobs in
one :class:`Settings` subclass: bounded fields, a default and a docstring under each. The study
file's sections validate against these same classes and the CLI builds its flags and help from
their fields (the way vLLM derives ``vllm serve --help`` from its config classes), so a name, a
default or a help text can never disagree between the three.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar, TypeVar

from pydantic import ConfigDict, ValidationError

from tuner.core._model import FrozenModel

S = TypeVar("S", bound="Settings")


class Settings(FrozenModel):
    """Frozen, strict settings of one component (bools are not ints, strings are not numbers).

    ``_owner`` names the component in error messages (``TPESearch.seed = -1: ...``).

    Example:
        >>> class Knobs(Settings):
        ...     _owner = "Widget"
        ...     size: int = 1
        ...     '''How big.'''
        >>> Knobs.build(None, {"size": 3}).size
        3
        >>> Knobs.model_fields["size"].description
        'How big.'
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        validate_default=True,
        strict=True,
        use_attribute_docstrings=True,
    )
    _owner: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super(FrozenModel, self).__init__(**data)
        except ValidationError as e:
            raise self._error_class(settings_error(type(self), e)) from None

    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]  # see FrozenModel

    @classmethod
    def build(cls: type[S], settings: S | None, changes: dict[str, Any]) -> S:
        """``settings`` with ``changes`` applied (or the defaults with them), validated.

        Raises:
            The class's error type, naming the owner, the field, the value and what is allowed
            (and, for a misspelt name, the closest valid one).
        """
        if settings is not None and not isinstance(settings, cls):
            raise cls._error_class(
                f"{cls._owner or cls.__name__}: expected {cls.__name__}, got {settings!r}"
            )
        base = settings.model_dump() if settings is not None else {}
        return cls(**{**base, **changes})

    def replace(self: S, **changes: Any) -> S:
        """A copy with some fields changed, validated."""
        return type(self).build(self, changes)


def settings_error(model: type[Settings], e: ValidationError) -> str:
    """One clause per problem: ``Owner.field = value: message`` (with the closest valid field
    name for an unknown one)."""
    owner = model._owner or model.__name__
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = unknown_key_message(str(err["loc"][-1]), list(model.model_fields))
            lines.append(f"{owner}: {msg}")
        elif loc:
            lines.append(f"{owner}.{loc} = {err.get('input')!r}: {msg}")
        else:
            lines.append(f"{owner}: {msg}")
    return "; ".join(lines)


def unknown_key_message(key: str, allowed: list[str]) -> str:
    """``unknown key 'n_trail' (did you mean 'n_trials'?); allowed: ...``"""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r}{hint}; allowed: {', '.join(allowed) or 'none'}"


__all__ = ["Settings", "settings_error", "unknown_key_message"]

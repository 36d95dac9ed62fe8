"""The base of every data model: frozen, strict about unknown fields, errors in our tree."""

from __future__ import annotations

import types
from typing import Any, ClassVar, Union, get_args, get_origin

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator
from typing_extensions import Self

from tuner.core._errors import ConfigError, TunerError


class FrozenModel(BaseModel):
    """A frozen pydantic model whose construction errors are :class:`TunerError` subclasses.

    Each error line names the model and field, the value given, and what is allowed. A bool is
    not taken for a number (pydantic would read ``True`` as 1), and assigning to a field raises
    :class:`ConfigError` pointing to :meth:`replace`.

    Example:
        >>> from tuner import ServingConfig
        >>> ServingConfig(max_num_seqs=8).replace(max_num_seqs=16).max_num_seqs
        16
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)
    _error_class: ClassVar[type[TunerError]] = ConfigError

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise self._error_class(format_validation_error(type(self).__name__, e)) from None

    # Not a "custom" __init__ for pydantic: a model nested in another is validated without it,
    # so the outer model's ValidationError keeps every nested error's location.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, (bool, np.bool_)) or info.field_name is None:
            return value
        kind = _numeric_kind(cls.model_fields[info.field_name].annotation)
        if kind is not None:
            raise ValueError(f"must be {kind}, not a bool (True is not 1 here)")
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):  # pydantic's private attributes
            super().__setattr__(name, value)
            return
        raise ConfigError(self._frozen_message(name, f" = {value!r}"))

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            super().__delattr__(name)
            return
        raise ConfigError(self._frozen_message(name, ""))

    def _frozen_message(self, name: str, value: str) -> str:
        what, fields = type(self).__name__, type(self).model_fields
        if name not in fields:
            known = ", ".join(fields)
            return f"{what}.{name}{value}: {what} is frozen and has no such field ({known})"
        return (
            f"{what}.{name}{value}: {what} is frozen and cannot be changed; "
            f"use .replace({name}=...) for a validated copy"
        )

    def replace(self, **changes: Any) -> Self:
        """A validated copy with some fields changed (raises the model's error class).

        Example:
            >>> from tuner import Request
            >>> Request(arrival=0, prompt_tokens=8, output_tokens=2).replace(arrival=1.5).arrival
            1.5
        """
        fields = {k: getattr(self, k) for k in type(self).model_fields}
        return type(self)(**{**fields, **changes})

    @classmethod
    def parse_obj_strict(cls, data: Any) -> Any:
        """Validate a mapping into this model, raising the model's error class."""
        if not isinstance(data, dict):
            raise cls._error_class(
                f"{cls.__name__}: expected a mapping of fields, got {type(data).__name__}"
            )
        return cls(**data)


def _numeric_kind(annotation: Any) -> str | None:
    """``"an integer"`` / ``"a number"`` for an int / float field (or Optional), else None."""
    if get_origin(annotation) in (Union, types.UnionType):
        options = get_args(annotation)
    else:
        options = (annotation,)
    if bool in options:
        return None
    if int in options:
        return "an integer"
    if float in options:
        return "a number"
    return None


def format_validation_error(what: str, e: ValidationError) -> str:
    """One readable clause per pydantic error: ``what.field = value: message``."""
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        if loc:
            lines.append(f"{what}.{loc} = {err.get('input')!r}: {msg}")
        else:
            lines.append(f"{what}: {msg}")
    return "; ".join(lines)

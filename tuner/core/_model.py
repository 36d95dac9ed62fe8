"""The base of every data model: frozen, strict about unknown fields, errors in our tree."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tuner.core._errors import ConfigError, TunerError


class FrozenModel(BaseModel):
    """A frozen pydantic model whose construction errors are :class:`TunerError` subclasses.

    Each error line names the model and field, the value given, and what is allowed.
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

    @classmethod
    def parse_obj_strict(cls, data: Any) -> Any:
        """Validate a mapping into this model, raising the model's error class."""
        if not isinstance(data, dict):
            raise cls._error_class(
                f"{cls.__name__}: expected a mapping of fields, got {type(data).__name__}"
            )
        return cls(**data)


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

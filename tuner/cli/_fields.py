"""Command-line flags derived from settings models: names, defaults and help from the fields.

``add_fields(parser, LiveSpec, only=[...])`` adds ``--startup-timeout`` and friends with the
field's docstring as help and its default shown; ``values(args, LiveSpec)`` reads them back as
a dict the same model validates. A flag, a study-file key and a constructor keyword are one
field, so their names, defaults and help cannot disagree.
"""

from __future__ import annotations

import argparse
import json
import types
from collections.abc import Iterable
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def flag(name: str, prefix: str = "") -> str:
    """``startup_timeout`` -> ``--startup-timeout`` (``--prefix-...`` with a prefix)."""
    return "--" + (prefix + "-" if prefix else "") + name.replace("_", "-")


def _dest(model: type[BaseModel], name: str, prefix: str) -> str:
    return f"{prefix}__{name}" if prefix else f"{model.__name__}__{name}"


def _plain(annotation: Any) -> tuple[Any, bool]:
    """The annotation without ``None`` (and whether None was allowed)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        return (args[0] if len(args) == 1 else annotation), optional
    return annotation, False


def _parse(annotation: Any, optional: bool) -> Any:
    """An argparse ``type`` for one field (``none`` for an optional one)."""

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        if annotation is bool:
            low = text.lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            raise argparse.ArgumentTypeError(f"{text!r}: expected true or false")
        if annotation is int:
            try:
                return int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r}: expected an integer") from None
        if annotation is float:
            try:
                return float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{text!r}: expected a number") from None
        if get_origin(annotation) in (list, dict):
            try:
                return json.loads(text)
            except json.JSONDecodeError as e:
                raise argparse.ArgumentTypeError(f"{text!r}: expected JSON ({e.msg})") from None
        return text

    parse.__name__ = getattr(annotation, "__name__", "value")
    return parse


def add_fields(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    only: Iterable[str] | None = None,
    *,
    prefix: str = "",
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one flag per field of ``model`` (or of ``only``), help from the field's docstring.

    ``defaults`` overrides a field's default for this command (shown in the help). A flag
    not given on the command line leaves the field out, so the model's own default applies.
    """
    names = list(only) if only is not None else list(model.model_fields)
    defaults = defaults or {}
    for name in names:
        field = model.model_fields[name]
        annotation, optional = _plain(field.annotation)
        default = defaults.get(name, field.default)
        shown = "" if default is PydanticUndefined else f" (default: {default})"
        help_text = " ".join((field.description or "").split()) + shown
        kwargs: dict[str, Any] = {
            "dest": _dest(model, name, prefix),
            "default": argparse.SUPPRESS,
            "help": help_text.replace("%", "%%"),
        }
        if get_origin(annotation) is Literal:
            kwargs["choices"] = list(get_args(annotation))
        if get_origin(annotation) is list and get_args(annotation)[:1] == (str,):
            kwargs["action"] = "append"  # repeatable: --server-args A --server-args B
            kwargs["metavar"] = "ARG"
        elif get_origin(annotation) is dict:
            kwargs["action"] = "append"  # repeatable: --env KEY=VALUE
            kwargs["type"] = _pair
            kwargs["metavar"] = "KEY=VALUE"
        else:
            kwargs["type"] = _parse(annotation, optional)
            kwargs["metavar"] = name.upper() if annotation is not bool else "BOOL"
        parser.add_argument(flag(name, prefix), **kwargs)


def values(
    args: argparse.Namespace,
    model: type[BaseModel],
    *,
    prefix: str = "",
    defaults: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The fields of ``model`` given on the command line (then ``defaults``), as a dict."""
    out = dict(defaults or {})
    for name, field in model.model_fields.items():
        dest = _dest(model, name, prefix)
        if hasattr(args, dest):
            value = getattr(args, dest)
            if get_origin(_plain(field.annotation)[0]) is dict:
                value = {**out.get(name, {}), **dict(value)}
            out[name] = value
    return out


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value

"""One configuration schema: options declared once, as dataclass fields with metadata.

``option(default, help, ...)`` declares a field's help text, its allowed values (a tuple, or a callable
returning the names of a registry), its minimum and its type. From these, :func:`check_fields` validates a
config, :func:`check_value` validates one value (notebook parameters), and :func:`add_options` builds the
command line options, with no defaults or choices of their own.
"""
from __future__ import annotations

import argparse
import dataclasses
import numbers
import typing
from typing import Any, Callable, Iterable, Sequence

from patchcore_lib.errors import ConfigError

Choices = tuple[str, ...] | Callable[[], Sequence[str]] | None

_MISSING = dataclasses.MISSING


def option(default: Any, help: str, *, choices: Choices = None, minimum: float | None = None,
           exclusive_minimum: float | None = None, maximum: float | None = None, nullable: bool | None = None,
           cli: bool = True, metavar: str | None = None) -> Any:
    """A dataclass field whose metadata the schema functions read. Lists default through a factory."""
    metadata = {"help": help, "choices": choices, "minimum": minimum, "exclusive_minimum": exclusive_minimum,
                "maximum": maximum, "nullable": nullable, "cli": cli, "metavar": metavar}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(field: dataclasses.Field) -> tuple[str, ...] | None:
    choices = field.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def default_of(field: dataclasses.Field) -> Any:
    if field.default is not _MISSING:
        return field.default
    if field.default_factory is not _MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return None


def schema_fields(cls: type) -> dict[str, dataclasses.Field]:
    """The fields of a config dataclass that carry schema metadata, by name."""
    return {f.name: f for f in dataclasses.fields(cls) if "help" in f.metadata}


def _type_info(cls: type, field: dataclasses.Field) -> tuple[type, bool, bool]:
    """(base type, nullable, is a sequence) of a field from its annotation."""
    hints = typing.get_type_hints(cls)
    hint = hints[field.name]
    nullable = False
    args = typing.get_args(hint)
    if args and type(None) in args:
        nullable = True
        rest = [a for a in args if a is not type(None)]
        hint = rest[0]
    origin = typing.get_origin(hint)
    if origin in (tuple, list):
        inner = typing.get_args(hint)[0] if typing.get_args(hint) else str
        return inner, nullable, True
    if field.metadata.get("nullable") is not None:
        nullable = field.metadata["nullable"]
    return hint, nullable, False


def _check_scalar(what: str, base: type, value: Any, field: dataclasses.Field) -> Any:
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{what} must be true or false, got {value!r}")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ConfigError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
        value = int(value)
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{what} must be a number, got {type(value).__name__} {value!r}")
        value = float(value)
    elif base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{what} must be a string, got {type(value).__name__} {value!r}")
    meta = field.metadata
    low, low_open = (meta["exclusive_minimum"], True) if meta.get("exclusive_minimum") is not None \
        else (meta.get("minimum"), False)
    high = meta.get("maximum")
    too_low = low is not None and (value <= low if low_open else value < low)
    if too_low or (high is not None and value > high):
        if high is None:
            raise ConfigError(f"{what} must be {'>' if low_open else '>='} {low:g}, got {value!r}")
        if low is None:
            raise ConfigError(f"{what} must be <= {high:g}, got {value!r}")
        raise ConfigError(f"{what} must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value!r}")
    choices = choices_of(field)
    if choices is not None and value not in choices:
        registry = getattr(field.metadata.get("choices"), "__self__", None)
        kind = getattr(registry, "kind", None)
        if kind:  # choices of a registry: "unknown backbone 'x'; valid backbones: ..."
            prefix = "" if what == field.name else f"{what}: "
            raise ConfigError(f"{prefix}unknown {kind} {value!r}; valid {kind}s: {', '.join(choices)}")
        if what == field.name:
            raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(choices)}")
        raise ConfigError(f"{what}: unknown value {value!r}; valid: {', '.join(choices)}")
    return value


def check_value(cls: type, name: str, value: Any, what: str | None = None) -> Any:
    """Validate (and normalise: ints to floats, lists to tuples) one value of field ``name`` of ``cls``."""
    fields = schema_fields(cls)
    if name not in fields:
        raise ConfigError(f"unknown option {name!r}; valid: {', '.join(fields)}")
    field = fields[name]
    what = what or name
    base, nullable, sequence = _type_info(cls, field)
    if value is None:
        if nullable:
            return None
        raise ConfigError(f"{what} must not be empty (None)")
    if sequence:
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ConfigError(f"{what} must be a list, got {type(value).__name__} {value!r}")
        items = tuple(_check_scalar(f"{what} item", base, item, field) for item in value)
        return items
    return _check_scalar(what, base, value, field)


def check_fields(config: Any) -> None:
    """Validate and normalise every schema field of a config dataclass instance, in place."""
    for name in schema_fields(type(config)):
        object.__setattr__(config, name, check_value(type(config), name, getattr(config, name)))


def config_dict(config: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build ``cls`` from a dict, ignoring unknown keys (older files) and turning lists into tuples."""
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                exclude: Iterable[str] = (), include: Iterable[str] | None = None, prefix: str = "") -> list[str]:
    """Add one ``--[prefix-]option`` per schema field of ``cls`` (default None = the config's default, shown
    in help; the parsed value lands in ``args.<prefix_>name``).

    Returns the field names added. Values are parsed by type only; choices and ranges are checked by
    :func:`check_value` when the config is built, so the library gives the one error message.
    """
    added = []
    excluded = set(exclude)
    wanted = None if include is None else set(include)
    for name, field in schema_fields(cls).items():
        if name in excluded or not field.metadata.get("cli", True) or (wanted is not None and name not in wanted):
            continue
        base, nullable, sequence = _type_info(cls, field)
        choices = choices_of(field)
        default = default_of(field)
        shown = list(default) if isinstance(default, tuple) else default
        help_text = field.metadata["help"]
        if choices:
            help_text += f" (one of: {', '.join(choices)})"
        help_text += f" [default: {shown if shown not in (None, ()) else 'see help'}]" if shown is not None \
            else " [default: none]"
        dest = f"{prefix}_{name}" if prefix else name
        kwargs: dict[str, Any] = {"default": None, "help": help_text, "dest": dest}
        parse = {int: int, float: float}.get(base, str)
        if base is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = parse
            kwargs["metavar"] = field.metadata.get("metavar") or name.upper()
            if sequence:
                kwargs["nargs"] = "+"
        parser.add_argument(flag(dest), **kwargs)
        added.append(name)
    return added


def options_from_args(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The options the user gave (``None`` = not given, so the config default applies)."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}

"""``serve --config FILE``: every flag of a subcommand, read from a TOML file.

The keys are derived from the parser itself, so a flag added to ``serve`` is
a key of the file with no table to update: the key is the flag's long name
without its dashes (``--state-dir`` is ``state-dir``); a flag that takes no
value (``--no-cgroups``) is a boolean; a repeatable flag (``--hide``) is an
array; every other value is converted by the flag's own ``type`` and checked
against its ``choices``, exactly as on the command line (a size may be
written ``"64K"`` or as a number of bytes). Flags given on the command line
override the file, a repeatable one replacing the file's whole array.

Every problem (the file missing or not TOML, an unknown key, a value of the
wrong type or a bad one) is a ``ConfigError`` naming the file and the key.
Nothing here has side effects beyond reading the file.
"""

from __future__ import annotations

import argparse
import difflib
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rund_trio.errors import ConfigError

NOT_IN_FILE = frozenset({"help", "config", "version"})
"""Flags that make no sense in the file (``--config`` itself included)."""


@dataclass(frozen=True)
class _Key:
    name: str
    action: argparse.Action

    @property
    def is_flag(self) -> bool:
        """Takes no value on the command line: a boolean in the file."""
        return self.action.nargs == 0

    @property
    def is_list(self) -> bool:
        """Repeatable or multi-valued: an array in the file."""
        # argparse exposes no public way to ask an action what it does with
        # repeated values; its append/extend classes are what ``action=`` makes.
        return isinstance(self.action, argparse._AppendAction | argparse._ExtendAction) or (
            self.action.nargs in ("*", "+")
        )


def file_keys(parser: argparse.ArgumentParser) -> dict[str, _Key]:
    """The keys a config file for ``parser`` may have, by name."""
    keys: dict[str, _Key] = {}
    # argparse has no public list of a parser's actions.
    for action in parser._actions:
        long_names = [o for o in action.option_strings if o.startswith("--")]
        if not long_names or action.dest in NOT_IN_FILE:
            continue
        name = long_names[0][2:]
        keys[name] = _Key(name, action)
    return keys


def given_on_command_line(fresh: argparse.ArgumentParser, argv: Sequence[str]) -> frozenset[str]:
    """The ``dest`` of every flag ``argv`` sets. ``fresh`` is a parser made
    for this call alone: its defaults are suppressed, so that only what the
    command line sets appears in what it parses."""
    for action in fresh._actions:
        action.default = argparse.SUPPRESS
    return frozenset(vars(fresh.parse_args(list(argv))))


def load(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The values ``path`` sets, by the flags' ``dest``, converted and
    checked as the command line would be. Raises ``ConfigError``."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: No such file or directory") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a directory, not a file") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not valid TOML: not UTF-8") from None

    keys = file_keys(parser)
    values: dict[str, Any] = {}
    for name, value in document.items():
        key = keys.get(name)
        if key is None:
            raise ConfigError(f"config file {path}: unknown key {name!r}{_suggestion(name, keys)}")
        try:
            converted = _convert(key, value)
        except _BadValue as error:
            raise ConfigError(f"config file {path}: key {name!r}: {error}") from None
        if converted is not _UNSET:
            values[key.action.dest] = converted
    return values


class _BadValue(Exception):
    pass


_UNSET = object()


def _suggestion(name: str, keys: dict[str, _Key]) -> str:
    spelled = name.replace("_", "-")
    if spelled in keys:
        return f" (did you mean {spelled!r}? keys are the flags' names)"
    close = difflib.get_close_matches(name, keys, n=1)
    return f" (did you mean {close[0]!r}?)" if close else " (keys are the flags of serve --help)"


def _convert(key: _Key, value: Any) -> Any:
    action = key.action
    if key.is_flag:
        if not isinstance(value, bool):
            raise _BadValue(f"expected true or false, not {_describe(value)}")
        if isinstance(action, argparse.BooleanOptionalAction):
            return value
        return action.const if value else _UNSET
    if key.is_list:
        if not isinstance(value, list):
            raise _BadValue(f"expected an array, e.g. [{_example(action)}], not {_describe(value)}")
        return [_scalar(action, item) for item in value]
    return _scalar(action, value)


def _scalar(action: argparse.Action, value: Any) -> Any:
    kind = action.type
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _BadValue(f"expected {_expected(action)}, not {_describe(value)}")
    if isinstance(value, str):
        converted = _call_type(action, value)
    elif kind is int or kind is float:
        if kind is int and isinstance(value, float):
            raise _BadValue(f"expected an integer, not {value!r}")
        converted = kind(value)
    elif kind is None or kind is str or kind is Path:
        raise _BadValue(f"expected a string, not {_describe(value)}")
    else:  # a parser of its own (sizes, user ids): the number as typed on the command line
        converted = _call_type(action, str(value))
    if action.choices is not None and converted not in action.choices:
        choices = ", ".join(repr(choice) for choice in action.choices)
        raise _BadValue(f"{value!r} is not one of {choices}")
    return converted


def _call_type(action: argparse.Action, text: str) -> Any:
    kind = action.type
    if kind is None:
        return text
    if kind is int or kind is float:
        try:
            return kind(text)
        except ValueError:
            raise _BadValue(f"expected {_expected(action)}, not {text!r}") from None
    try:
        return kind(text)  # type: ignore[operator]
    except argparse.ArgumentTypeError as error:
        raise _BadValue(str(error)) from None
    except (TypeError, ValueError) as error:
        raise _BadValue(f"{text!r}: {error}") from None


def _expected(action: argparse.Action) -> str:
    if action.type is int:
        return "an integer"
    if action.type is float:
        return "a number"
    if action.type is None or action.type is str or action.type is Path:
        return "a string"
    return "a string or a number"


def _example(action: argparse.Action) -> str:
    return '"..."' if action.type in (None, str, Path) else "..."


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int | float):
        return f"the number {value!r}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"

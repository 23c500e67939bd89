"""``Value``: the base of the package's small immutable records.

What ``@dataclass(frozen=True, slots=True)`` gave them (equality and hash by
type and fields, a ``Name(field=...)`` repr, no assignment after ``__init__``)
without importing ``dataclasses``: that import (it pulls ``inspect``) and the
class building it does cost a one-shot CLI command ~15 ms, a tenth of its life.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["Value"]


class Value:
    """Subclasses name their fields in ``__slots__``, in ``__init__``'s order
    (``# noqa: RUF023``: ruff would sort them, and the repr with them), and set
    them in ``__init__`` with ``object.__setattr__``."""

    __slots__: tuple[str, ...] = ()

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((type(self), self._fields()))

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__qualname__}({fields})"

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"cannot assign to field {name!r} of {type(self).__qualname__}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"cannot delete field {name!r} of {type(self).__qualname__}")

"""Column dictionaries: every table a stage writes declares its columns and what each means.

A :class:`Columns` is the table's column names in order (it *is* a tuple of names, so it serves
``reindex``, ``==`` and ``in``) and carries each column's meaning, which the report shows under
the table and ``docs/outputs.md`` repeats. The module that writes a table owns its
:class:`Columns`; readers look names and meanings up there instead of restating them.
"""

from __future__ import annotations

from collections.abc import Iterable


class Columns(tuple[str, ...]):
    """Column names in table order, with a meaning for each.

    Build with ``Columns(("name", "what it means"), ...)``; combine with ``+`` (keeps the
    meanings).
    """

    meanings: dict[str, str]

    def __new__(cls, *pairs: tuple[str, str]) -> Columns:
        names = [name for name, _ in pairs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names in {names}")
        self = super().__new__(cls, names)
        self.meanings = dict(pairs)
        return self

    def pairs(self) -> tuple[tuple[str, str], ...]:
        """``(name, meaning)`` in table order."""
        return tuple((name, self.meanings[name]) for name in self)

    def __add__(self, other: object) -> Columns:  # type: ignore[override]
        if not isinstance(other, Columns):
            return NotImplemented
        return Columns(*self.pairs(), *other.pairs())

    def pick(self, names: Iterable[str]) -> Columns:
        """The named columns, in the order given.

        Raises:
            ValueError: a name is not a column of this table.
        """
        names = list(names)
        unknown = [n for n in names if n not in self.meanings]
        if unknown:
            raise ValueError(f"columns {unknown} are not in the table (it has {list(self)})")
        return Columns(*((n, self.meanings[n]) for n in names))

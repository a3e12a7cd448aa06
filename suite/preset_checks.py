"""Validation helpers for preset TOML: ``file:line`` of a key, key and type checks.

``tomllib`` does not report line numbers, so ``Locator`` finds them in the source text (a table
header, then the key inside its block); that is enough for hand-written presets. ``Section`` is
one table being validated, handed to a family's ``kernel_section`` parser
(effbench.suite.family), so a family module validates its own ``[kernel.<family>]`` table with
the same messages and locations as the rest of the preset. Light on purpose: the spec layer
imports it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from effbench.suite.errors import ConfigError


class Locator:
    """Maps a key path to ``file:line`` in the TOML text."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def _header(self, table: str, index: int | None) -> int | None:
        pat = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
        hits = [i for i, ln in enumerate(self.lines) if pat.match(ln)]
        if not hits:
            return None
        return hits[index or 0] if (index or 0) < len(hits) else hits[-1]

    def at(self, table: str | None, key: str | None = None, index: int | None = None) -> str:
        """``file:line`` of ``key`` in ``table`` (the table's header without a key; the file
        alone when neither is found).
        """
        start = 0
        if table:
            h = self._header(table, index)
            if h is None:
                return self.path
            start = h
            if key is None:
                return f"{self.path}:{h + 1}"
        if key is not None:
            pat = re.compile(rf"^\s*{re.escape(key)}\s*=|[{{,]\s*{re.escape(key)}\s*=")
            for i in range(start, len(self.lines)):
                if i > start and table and self.lines[i].lstrip().startswith("["):
                    break
                if pat.search(self.lines[i]):
                    return f"{self.path}:{i + 1}"
        return f"{self.path}:{start + 1}" if table else self.path


def check_keys(
    got: Mapping[str, Any], allowed: list[str], what: str, loc: Locator, table: str | None,
    index: int | None = None,
) -> None:
    """ConfigError at the first key of ``got`` not in ``allowed``, listing the valid keys."""
    for k in got:
        if k not in allowed:
            raise ConfigError(
                f"unknown key '{k}' in {what}; valid keys: {allowed}", loc.at(table, k, index)
            )


def typed(value: Any, want: type, key: str, where: str, lo: float | None = None) -> Any:
    """``value`` as type ``want`` (an int is accepted as a float), at least ``lo`` if given."""
    ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"'{key}' must be {want.__name__}, got {value!r}", where)
    if lo is not None and value < lo:
        raise ConfigError(f"'{key}' = {value!r} must be >= {lo}", where)
    return value


@dataclass(frozen=True)
class Section:
    """One table of a preset (``kernel.attention``, ...) being validated.

    ``at(key)`` is where a key sits (``file:line``); ``check_keys`` and ``typed`` raise the
    preset's usual ConfigErrors, located in this table.
    """

    loc: Locator
    table: str

    def at(self, key: str | None = None) -> str:
        return self.loc.at(self.table, key)

    def check_keys(self, got: Mapping[str, Any], allowed: list[str], what: str | None = None
                   ) -> None:
        check_keys(got, allowed, what or f"[{self.table}]", self.loc, self.table)

    def typed(self, value: Any, want: type, key: str, lo: float | None = None,
              where: str | None = None) -> Any:
        return typed(value, want, key, where or self.at(key), lo)

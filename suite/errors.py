"""Errors that the CLI turns into one clear line (and exit code 2) instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class EffbenchError(Exception):
    """Base of every error that is the user's input, not a bug."""


class ConfigError(EffbenchError):
    """A preset, parameter, technique name or option is invalid; raised before any work runs.

    ``where`` is ``file:line`` (or the CLI flag) the bad value came from, when known.
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


def unknown_name(kind: str, name: str, valid: Iterable[str], where: str | None = None,
                 plural: str | None = None) -> ConfigError:
    """The error for a name that is not registered: ``unknown <kind> '<name>' (did you mean
    ...?); valid <plural>: [...]``, closest names first in the hint, every valid name listed.
    """
    valid = list(valid)
    close = difflib.get_close_matches(name, valid, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return ConfigError(f"unknown {kind} '{name}'{hint}; valid {plural or kind + 's'}: {valid}",
                       where)


class DeviceError(EffbenchError):
    """The requested device is not present on this machine."""


class StoreError(EffbenchError):
    """The results folder cannot be written or a stored run cannot be read."""

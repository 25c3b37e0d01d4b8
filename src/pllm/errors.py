"""Typed errors. Anything a user can cause raises a `PllmError` subclass with a message that names
what was wrong and where; the CLI turns those into one line and a non-zero exit."""

from __future__ import annotations


class PllmError(Exception):
    """Base class for errors caused by user input or environment, shown without a traceback."""


class UnknownNameError(PllmError, KeyError):
    """A name looked up in a registry does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InputError(PllmError, ValueError):
    """Malformed input data; the message names the file, record and field."""

    def __init__(self, message: str, *, source: str | None = None, index: int | None = None,
                 field: str | None = None) -> None:
        where = []
        if source is not None:
            where.append(str(source))
        if index is not None:
            where.append(f"record {index}")
        if field is not None:
            where.append(f"field {field!r}")
        self.source, self.index, self.field = source, index, field
        super().__init__(f"{': '.join(where)}: {message}" if where else message)


class NotFoundError(PllmError, LookupError):
    """A user, item or artifact that was asked for does not exist."""


class ArtifactError(PllmError):
    """A stored artifact (adapter, encoder, cache) is missing, corrupt or incompatible."""

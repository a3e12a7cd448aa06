r"""An incremental parser of server-sent events (SSE) as OpenAI-compatible servers stream them.

Bytes go in as the network delivers them (:meth:`SSEParser.feed`); complete events come out,
each as the text of its ``data:`` lines (joined with newlines, as the SSE specification says).
Lines end in ``\\n``, ``\\r\\n`` or ``\\r``; a blank line ends an event; ``event:``, ``id:`` and
``retry:`` fields and ``:`` comments are accepted and ignored.

What is *not* valid here is stricter than the specification, which would silently ignore a
line with an unknown field name: an OpenAI-compatible stream has none, and such a line is what a
server that answers with JSON, HTML or plain text instead of a stream sends. So any other line,
or bytes that are not UTF-8, raise :class:`SSEError` carrying the first bad bytes, which the
client records as the request's failure.
"""

from __future__ import annotations

import re

FIELDS = (b"data", b"event", b"id", b"retry")
SHOWN_BYTES = 80
"""How many of the first bad bytes an error keeps."""
_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSEError(ValueError):
    """The stream is not valid SSE; ``bad`` holds the first offending bytes."""

    def __init__(self, why: str, bad: bytes) -> None:
        self.bad = bad[:SHOWN_BYTES]
        super().__init__(f"not valid SSE ({why}): first bad bytes {self.bad!r}")


class SSEParser:
    """Feed bytes, get complete events' data (module docstring)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event that ``chunk`` completes, in order."""
        self._buffer += chunk
        return self._drain(final=False)

    def close(self) -> list[str]:
        """At the end of the stream: a last event not followed by a blank line, if any.

        An unterminated last line is parsed too (a server may omit the final newline).
        """
        events = self._drain(final=True)
        if self._buffer:
            line, self._buffer = self._buffer, b""
            event = self._line(line)
            if event is not None:
                events.append(event)
        if self._data:
            events.append("\n".join(self._data))
            self._data = []
        return events

    def _drain(self, final: bool) -> list[str]:
        events: list[str] = []
        while True:
            m = _LINE_END.search(self._buffer)
            # a lone \r at the end may be the first half of \r\n: wait for the next byte
            if m is None or (not final and m.group() == b"\r" and m.end() == len(self._buffer)):
                break
            line, self._buffer = self._buffer[: m.start()], self._buffer[m.end() :]
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: bytes) -> str | None:
        if not line:
            if not self._data:
                return None
            event, self._data = "\n".join(self._data), []
            return event
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if name not in FIELDS:
            raise SSEError("a line that is not an SSE field", line)
        if value.startswith(b" "):
            value = value[1:]
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise SSEError("bytes that are not UTF-8", line) from None
        if name == b"data":
            self._data.append(text)
        return None

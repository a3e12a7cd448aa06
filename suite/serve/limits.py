"""A request body size limit as plain ASGI middleware (answers 413 before the app reads more).

A declared ``Content-Length`` over the limit is refused before any byte of the body is read; a
body without one (chunked transfer) is counted as it arrives and refused once it passes the
limit. The refusal has the OpenAI error shape the rest of the API uses.
"""

from __future__ import annotations

from typing import Any

import orjson

Scope = dict[str, Any]
Message = dict[str, Any]


class _TooLarge(Exception):
    pass


def error_body(message: str, kind: str, param: str | None = None) -> bytes:
    """``{"error": {"message", "type", "param", "code"}}`` as OpenAI-compatible servers send."""
    return orjson.dumps({"error": {"message": message, "type": kind, "param": param, "code": None}})


class BodyLimit:
    """Wrap an ASGI app so request bodies over ``max_bytes`` get 413 (module docstring)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Any) -> None:
        body = error_body(
            f"request body exceeds the server's limit of {self.max_bytes} bytes",
            "request_too_large",
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                await self._refuse(send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

"""One streamed request to an OpenAI-compatible server, timed chunk by chunk (httpx).

:func:`stream_one` sends the request and reads the response as raw bytes; every network read
is stamped with ``time.perf_counter_ns()`` as it arrives, before parsing, and each SSE event
(effbench.suite.sse) completed by that read gets that stamp. An event with a non-empty
``choices`` list is a *chunk* (its text is ``choices[0].text`` or ``choices[0].delta.content``);
an event with ``usage`` gives the server's token counts; ``data: [DONE]`` ends the stream (a
stream that simply ends is accepted too: ``transformers serve`` sends no ``[DONE]``).

A request fails, with the reason in :attr:`Outcome.error`, on an HTTP error status (the field
the server refused is named when its body says which: :func:`describe_http_error`), a response
that is not valid SSE (the first bad bytes), an ``error`` event, a timeout or a connection
error. Nothing here raises for one request's failure: the run goes on.

httpx is imported by the caller (effbench.suite.levels.serving_endpoint), which turns its
absence into one line naming the ``serve`` extra.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from effbench.suite.sse import SSEError, SSEParser

API_PATHS = {"completions": "/completions", "chat": "/chat/completions"}
_QUOTED = re.compile(r"['\"`]([A-Za-z_][\w.]*)['\"`]")


@dataclass(frozen=True)
class Chunk:
    """One streamed event with a choice: when it arrived, its text, its finish reason."""

    t_ns: int
    text: str
    finish_reason: str | None = None


@dataclass
class Outcome:
    """What one request got: send time, chunks, usage, and the error if it failed."""

    send_ns: int
    chunks: list[Chunk] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: str | None = None
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chunks)


def request_body(
    api: str,
    model: str,
    prompt: str,
    max_tokens: int,
    *,
    ignore_eos: bool,
    temperature: float = 0.0,
) -> dict[str, Any]:
    """The JSON body of one streamed request (greedy by default, usage asked for).

    ``ignore_eos`` is sent only when true, since servers that do not know it refuse it.
    """
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if api == "chat":
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if ignore_eos:
        body["ignore_eos"] = True
    return body


def _field_of(err: Any, sent: Iterable[str]) -> str | None:
    """The request field an error body blames: OpenAI's ``param``, FastAPI's ``loc``, else a
    quoted name in the message that is one of the fields ``sent``.
    """
    if isinstance(err, dict):
        inner = err.get("error", err)
        if isinstance(inner, dict) and isinstance(inner.get("param"), str) and inner["param"]:
            return inner["param"]
        detail = err.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            loc = [str(x) for x in detail[0].get("loc", ()) if x not in ("body", 0)]
            if loc:
                return ".".join(loc)
    text = err if isinstance(err, str) else orjson.dumps(err).decode()
    names = set(sent)
    for name in _QUOTED.findall(text):
        if name.split(".")[0] in names:
            return name
    return next(
        (
            n
            for n in sorted(names, key=len, reverse=True)
            if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", text)
        ),
        None,
    )


def _message_of(err: Any) -> str:
    if isinstance(err, dict):
        inner = err.get("error", err)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
        detail = err.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return str(detail[0].get("msg", detail[0]))
        if detail:
            return str(detail)
    return str(err)


def describe_http_error(status: int, body: bytes, sent: Iterable[str] = ()) -> str:
    """``HTTP 422: field 'ignore_eos': <the server's message>``: the field is named for a
    client error (4xx) whose body says which one (an OpenAI ``param``, a FastAPI ``loc``, or
    one of the ``sent`` field names in the message); other statuses give the message only.
    """
    try:
        err: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        err = body.decode("utf-8", "replace").strip()[:200]
    name = _field_of(err, sent) if 400 <= status < 500 else None
    message = " ".join(_message_of(err).split())[:300]
    return f"HTTP {status}: field '{name}': {message}" if name else f"HTTP {status}: {message}"


def _apply(out: Outcome, data: str, t_ns: int, api: str) -> None:
    """Fold one event's data into ``out`` (module docstring); SSEError for non-JSON data."""
    if data.strip() == "[DONE]":
        out.done = True
        return
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise SSEError("data that is not JSON", data.encode()) from None
    if not isinstance(obj, dict):
        raise SSEError("data that is not a JSON object", data.encode())
    if obj.get("error"):
        out.error = f"error event: {_message_of(obj)}"
        return
    choices = obj.get("choices") or []
    if choices:
        choice = choices[0]
        text = (choice.get("delta") or {}).get("content") if api == "chat" else choice.get("text")
        out.chunks.append(Chunk(t_ns, text or "", choice.get("finish_reason")))
    if obj.get("usage"):
        out.usage = obj["usage"]


async def stream_one(
    client: Any,
    url: str,
    body: dict[str, Any],
    api: str,
    now: Callable[[], int] = time.perf_counter_ns,
) -> Outcome:
    """POST ``body`` to ``url`` with ``client`` (an ``httpx.AsyncClient``) and time the
    stream; never raises for the request's own failure (module docstring).
    """
    import httpx

    out = Outcome(send_ns=now())
    parser = SSEParser()
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code >= 400:
                out.error = describe_http_error(response.status_code, await response.aread(), body)
                return out
            async for raw in response.aiter_bytes():
                t = now()
                for data in parser.feed(raw):
                    _apply(out, data, t, api)
                if out.error or out.done:
                    return out
            for data in parser.close():
                _apply(out, data, now(), api)
    except SSEError as e:
        out.error = str(e)
    except httpx.TimeoutException as e:
        out.error = f"timed out ({type(e).__name__})"
    except httpx.HTTPError as e:
        out.error = f"connection error: {type(e).__name__}: {e}"
    return out

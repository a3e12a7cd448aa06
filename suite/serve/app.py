"""The OpenAI-compatible routes of ``effbench serve`` (FastAPI) and their request schemas.

Routes: ``GET /v1/models``, ``POST /v1/completions``, ``POST /v1/chat/completions`` (both
streamed with server-sent events ending in ``data: [DONE]`` when ``stream`` is true, with a
final usage chunk when ``stream_options.include_usage`` is true), and ``GET /health``.
Supported fields: ``model``, ``prompt`` (text or token ids) / ``messages``, ``max_tokens``
(chat also ``max_completion_tokens``), ``temperature`` (0 = greedy), ``stream``,
``stream_options.include_usage``, ``ignore_eos``. Fields this server cannot honour with a value
that changes the result (``n`` > 1, ``stop``, ``logprobs``, ``echo``, ``suffix``, ``best_of``
> 1) are refused with 400 naming the field; other unknown fields are ignored, as vLLM does.

Every error has OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``; ``param``
names the offending field. A full queue answers 503 (with ``Retry-After``), a body over the
size limit 413 (effbench.suite.serve.limits).

One streamed chunk is sent per engine emission, so a chunk carries one token (several for a
speculative step) and the number of chunks with a choice equals ``completion_tokens``; the
role of a chat reply rides in the first content chunk rather than a chunk of its own.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from effbench.kernels_ref.tokenizer import Tokenizer
from effbench.suite.serve.engine_loop import Emission, EngineLoop, Job
from effbench.suite.serve.limits import error_body
from effbench.suite.serve.text import TextStream, render_chat

DEFAULT_COMPLETION_TOKENS = 16
"""``max_tokens`` of a completion that gives none (OpenAI's default); chat runs to the end
of the context."""


class ApiError(Exception):
    """An error answered with OpenAI's error body; ``param`` names the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class _Sampling(BaseModel):
    """Fields shared by both routes."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    n: int = 1
    stop: str | list[str] | None = None
    logprobs: Any = None
    best_of: int | None = None

    def unsupported(self) -> tuple[str, str] | None:
        """(field, why) of the first field this server cannot honour, else None."""
        if self.n != 1:
            return "n", "this server returns one choice (n = 1)"
        if self.stop:
            return "stop", "stop sequences are not supported"
        if self.logprobs not in (None, False, 0):
            return "logprobs", "logprobs are not supported"
        if self.best_of not in (None, 1):
            return "best_of", "best_of > 1 is not supported"
        return None


class CompletionRequest(_Sampling):
    prompt: str | list[int]
    echo: bool = False
    suffix: str | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if self.echo:
            return "echo", "echo is not supported"
        if self.suffix:
            return "suffix", "suffix is not supported"
        return super().unsupported()


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"] = "text"
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


@dataclass
class ServerState:
    """What the routes share: the engine loop, the tokenizer and the served model's name."""

    loop: EngineLoop
    tokenizer: Tokenizer
    model_id: str
    max_positions: int
    techniques: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    ids: itertools.count = field(default_factory=itertools.count)


def _error(
    status: int,
    message: str,
    param: str | None = None,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> Response:
    return Response(
        error_body(message, kind, param),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@dataclass
class _Call:
    """One generation call: its ids, limits and the queue its emissions arrive on."""

    kind: Literal["completion", "chat"]
    rid: int
    prompt: list[int]
    max_tokens: int
    stream: bool
    include_usage: bool
    queue: asyncio.Queue[Emission]
    finished: bool = False


def _prompt_ids(state: ServerState, body: CompletionRequest | ChatRequest) -> list[int]:
    tok = state.tokenizer
    if isinstance(body, ChatRequest):
        return [tok.bos_id, *tok.encode(render_chat([(m.role, m.text()) for m in body.messages]))]
    if isinstance(body.prompt, str):
        return [tok.bos_id, *tok.encode(body.prompt)]
    bad = [t for t in body.prompt if not 0 <= t < tok.vocab_size]
    if bad:
        raise ApiError(
            400, f"token id {bad[0]} is outside the vocabulary (0...{tok.vocab_size - 1})", "prompt"
        )
    return [tok.bos_id, *body.prompt]


def _start(
    state: ServerState, body: CompletionRequest | ChatRequest, kind: Literal["completion", "chat"]
) -> _Call:
    """Validate ``body``, submit its job; the call to stream or collect. ApiError else."""
    if body.model is not None and body.model != state.model_id:
        raise ApiError(
            404,
            f"model '{body.model}' does not exist; this server serves '{state.model_id}'",
            "model",
            "not_found_error",
        )
    bad = body.unsupported()
    if bad is not None:
        raise ApiError(400, f"'{bad[0]}': {bad[1]}", bad[0])
    ids = _prompt_ids(state, body)
    room = state.max_positions - len(ids)
    where = "messages" if kind == "chat" else "prompt"
    if room < 1:
        raise ApiError(
            400,
            f"the prompt has {len(ids)} tokens; the model's context is {state.max_positions}",
            where,
        )
    asked = body.max_tokens
    if kind == "chat" and asked is None:
        asked = body.max_completion_tokens  # type: ignore[union-attr]
    max_tokens = (
        asked
        if asked is not None
        else (DEFAULT_COMPLETION_TOKENS if kind == "completion" else room)
    )
    if max_tokens > room:
        raise ApiError(
            400,
            f"max_tokens = {max_tokens} plus the prompt's {len(ids)} tokens "
            f"exceeds the model's context ({state.max_positions})",
            "max_tokens",
        )
    rid = next(state.ids)
    q: asyncio.Queue[Emission] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    temperature = 1.0 if body.temperature is None else body.temperature
    job = Job(
        rid,
        ids,
        max_tokens,
        None if body.ignore_eos else state.tokenizer.eos_id,
        temperature,
        lambda e: loop.call_soon_threadsafe(q.put_nowait, e),
    )
    if not state.loop.submit(job):
        raise ApiError(
            503,
            f"the server's queue is full ({state.loop.max_queue} requests); retry later",
            None,
            "server_busy",
        )
    opts = body.stream_options
    return _Call(
        kind,
        rid,
        ids,
        max_tokens,
        body.stream,
        bool(body.stream and opts is not None and opts.include_usage),
        q,
    )


def _usage(call: _Call, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": len(call.prompt),
        "completion_tokens": completion,
        "total_tokens": len(call.prompt) + completion,
    }


def _chunk(
    state: ServerState, call: _Call, text: str, reason: str | None, first: bool
) -> dict[str, Any]:
    if call.kind == "chat":
        delta: dict[str, Any] = (
            {"role": "assistant", "content": text} if first else {"content": text}
        )
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        obj = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        obj = "text_completion"
    out = {
        "id": _id(call),
        "object": obj,
        "created": state.created,
        "model": state.model_id,
        "choices": [choice],
    }
    if call.include_usage:
        out["usage"] = None
    return out


def _stream_object(call: _Call) -> str:
    return "chat.completion.chunk" if call.kind == "chat" else "text_completion"


def _id(call: _Call) -> str:
    return f"{'chatcmpl' if call.kind == 'chat' else 'cmpl'}-{call.rid}"


async def _events(state: ServerState, call: _Call) -> AsyncIterator[bytes]:
    """The SSE body: one chunk per emission, the usage chunk if asked, then ``[DONE]``."""
    text = TextStream(state.tokenizer)
    produced = 0
    try:
        while True:
            e = await call.queue.get()
            if e.error is not None:
                yield _sse(
                    {
                        "error": {
                            "message": e.error,
                            "type": "server_error",
                            "param": None,
                            "code": None,
                        }
                    }
                )
                call.finished = True
                break
            first = produced == 0
            produced += len(e.tokens)
            yield _sse(
                _chunk(state, call, text.push(e.tokens, last=e.finished), e.finish_reason, first)
            )
            if e.finished:
                call.finished = True
                if call.include_usage:
                    yield _sse(
                        {
                            "id": _id(call),
                            "object": _stream_object(call),
                            "created": state.created,
                            "model": state.model_id,
                            "choices": [],
                            "usage": _usage(call, produced),
                        }
                    )
                break
        yield b"data: [DONE]\n\n"
    finally:
        if not call.finished:  # the client went away mid-stream
            state.loop.cancel(call.rid)


async def _collect(state: ServerState, call: _Call) -> Response:
    """The whole reply as one JSON body (``stream`` false)."""
    text = TextStream(state.tokenizer)
    produced, parts, reason = 0, [], None
    try:
        while True:
            e = await call.queue.get()
            if e.error is not None:
                call.finished = True
                return _error(500, e.error, None, "server_error")
            produced += len(e.tokens)
            parts.append(text.push(e.tokens, last=e.finished))
            if e.finished:
                call.finished, reason = True, e.finish_reason
                break
    finally:
        if not call.finished:
            state.loop.cancel(call.rid)
    content = "".join(parts)
    if call.kind == "chat":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "logprobs": None,
            "finish_reason": reason,
        }
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": content, "logprobs": None, "finish_reason": reason}
        obj = "text_completion"
    return JSONResponse(
        {
            "id": _id(call),
            "object": obj,
            "created": state.created,
            "model": state.model_id,
            "choices": [choice],
            "usage": _usage(call, produced),
        }
    )


async def _respond(
    state: ServerState, body: CompletionRequest | ChatRequest, kind: Literal["completion", "chat"]
) -> Response:
    call = _start(state, body, kind)
    if call.stream:
        return StreamingResponse(
            _events(state, call),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    return await _collect(state, call)


def _validation_param(err: dict[str, Any]) -> str | None:
    loc = [str(x) for x in err.get("loc", ()) if x != "body"]
    # a union's branch names ("str", "list[int]") are not fields: keep the field path only
    fields = [x for x in loc if not any(c in x for c in "[]") and x not in ("str", "int")]
    return ".".join(fields) or None


def create_app(state: ServerState) -> FastAPI:
    """The FastAPI application over ``state`` (routes in the module docstring)."""
    app = FastAPI(title="effbench serve", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        headers = {"Retry-After": "1"} if exc.status == 503 else None
        return _error(exc.status, exc.message, exc.param, exc.kind, headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        err = exc.errors()[0]
        if err.get("type") == "json_invalid":
            return _error(400, "the request body is not valid JSON")
        param = _validation_param(err)
        return _error(400, f"{param or 'body'}: {err.get('msg', 'invalid value')}", param)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "pending": state.loop.pending}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": state.model_id,
                    "object": "model",
                    "created": state.created,
                    "owned_by": "effbench",
                    "max_model_len": state.max_positions,
                    "techniques": state.techniques,
                }
            ],
        }

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest) -> Response:
        return await _respond(state, body, "completion")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest) -> Response:
        return await _respond(state, body, "chat")

    return app

"""Servers for the serving tests: ``effbench serve`` as a real subprocess, fakes in a thread.

``EffbenchServer`` starts ``effbench serve`` on 127.0.0.1 and a free port under a
``ChildGuard`` (so it never outlives the test session), waits until ``/health`` answers, and
stops it by its pid. ``ThreadServer`` runs a small ASGI app (``fake_app``: an OpenAI-like server
that misbehaves on purpose) under uvicorn in a thread of the test process.
"""

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from effbench.suite.subprocs import ChildGuard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    """Poll ``url`` until it answers 200; RuntimeError with the server's output otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {out[-2000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


class EffbenchServer:
    """``effbench serve ARGS`` on a free port (context manager); ``url`` is its /v1 base."""

    def __init__(self, *args: str, timeout_s: float = 90.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.cmd = [
            sys.executable,
            "-m",
            "effbench.suite.cli",
            "serve",
            "--device",
            "cpu",
            "--port",
            str(self.port),
            "--threads",
            "1",
            *args,
        ]
        self.timeout_s = timeout_s
        self.guard = ChildGuard(grace_s=5.0)
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "EffbenchServer":
        self.guard.__enter__()
        self.proc = self.guard.popen(
            self.cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        try:
            wait_ready(self.url.removesuffix("/v1") + "/health", self.timeout_s, self.proc)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.guard.stop(self.proc)  # SIGTERM to its pid's group, SIGKILL after the grace
        self.guard.__exit__(None, None, None)


class ThreadServer:
    """uvicorn serving ``app`` on 127.0.0.1 in a daemon thread (context manager)."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        wait_ready(f"{self.url}/models", 20.0)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def fake_app(
    *, usage: bool = True, bad_every: int = 0, refuse: str | None = None, tokens: str = "ab"
) -> Any:
    """An OpenAI-like completions server that streams ``max_tokens`` chunks of ``tokens``.

    ``usage``: send the usage chunk when asked; ``bad_every``: every n-th request (from the
    second) answers 200 with a body that is not SSE; ``refuse``: answer 422 (FastAPI's shape)
    to any request carrying that field. (This module has no ``from __future__ import
    annotations``: FastAPI must see the route's ``Request`` annotation as a class.)
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse

    app = FastAPI()
    seen = {"n": 0}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": "fake", "object": "model"}]}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await request.json()
        seen["n"] += 1
        if refuse and refuse in body:
            return JSONResponse(
                {
                    "detail": [
                        {
                            "loc": ["body", refuse],
                            "msg": "Extra inputs are not permitted",
                            "type": "extra_forbidden",
                        }
                    ]
                },
                status_code=422,
            )
        if bad_every and seen["n"] > 1 and seen["n"] % bad_every == 0:
            return Response("<html>upstream error</html>\n", media_type="text/html")
        n = int(body.get("max_tokens", 16))

        async def events():
            for i in range(n):
                await asyncio.sleep(0.002)
                choice = {
                    "index": 0,
                    "text": tokens,
                    "finish_reason": "length" if i == n - 1 else None,
                }
                yield "data: " + json.dumps({"choices": [choice]}) + "\n\n"
            if usage and (body.get("stream_options") or {}).get("include_usage"):
                counts = {"prompt_tokens": 7, "completion_tokens": n}
                yield "data: " + json.dumps({"choices": [], "usage": counts}) + "\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def write_preset(path: Path, url: str, **serving: Any) -> Path:
    """A serving-only preset measuring ``url`` (values as TOML literals via repr/str)."""
    keys = {
        "endpoint": url,
        "endpoint_name": "srv",
        "requests": 6,
        "rate": 50.0,
        "output_tokens": 6,
        "slo": None,
        **serving,
    }
    lines = ["[run]", 'name = "endpoint-test"', "", "[serving]"]
    for k, v in keys.items():
        if v is None:
            continue
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, str):
            lines.append(f'{k} = "{v}"')
        elif v == float("inf"):
            lines.append(f"{k} = inf")
        else:
            lines.append(f"{k} = {v}")
    path.write_text("\n".join(lines) + "\n")
    return path

"""``effbench serve`` as a real server: a subprocess on 127.0.0.1, driven over HTTP with httpx.

One server for the module (chunked prefill, a queue of 4, a 64 KiB body limit), stopped by its
pid at the end. Checked: the model list, greedy output equal to the engine's offline greedy
output for the same prompt, streaming (one chunk per token, usage, ``[DONE]``), chat, the
fields that are refused (named), 413 over the size limit, 503 when the queue is full, and that a
client that goes away frees its place in the queue.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve_helpers import EffbenchServer  # noqa: E402

pytestmark = pytest.mark.slow
PROMPT = "def fibonacci(n):\n    "


@pytest.fixture(scope="module")
def server():
    with EffbenchServer(
        "--model",
        "tiny",
        "--technique",
        "chunked-prefill:token_budget=64",
        "--max-queue",
        "4",
        "--max-request-bytes",
        "65536",
    ) as s:
        yield s


def _offline_greedy(prompt: str, n: int) -> tuple[str, int]:
    """The reference engine's greedy text for ``prompt`` (BOS + its ids), as the server runs
    it: dense attention, full cache, autoregressive decoding, chunked prefill of 64.
    """
    import torch

    from effbench.kernels_ref.attention import DenseAttention
    from effbench.kernels_ref.decoding import Autoregressive
    from effbench.kernels_ref.engine import Engine
    from effbench.kernels_ref.kvcache import FullKVCacheFactory
    from effbench.kernels_ref.requests import Request
    from effbench.kernels_ref.scheduling import ChunkedPrefill
    from effbench.suite.context import load_model

    model, tok = load_model("tiny", torch.device("cpu"), torch.float32, 0)
    ids = [tok.bos_id, *tok.encode(prompt)]
    engine = Engine(
        model,
        attention=DenseAttention(),
        cache_factory=FullKVCacheFactory(),
        scheduler=ChunkedPrefill(64),
        decoder=Autoregressive(),
    )
    (req,) = engine.run([Request(0, ids, n)]).requests
    return tok.decode(req.output), len(ids)


def test_models(server):
    (model,) = httpx.get(f"{server.url}/models").json()["data"]
    assert model["id"] == "tiny" and "chunked-prefill:token_budget=64" in model["techniques"]


def test_greedy_completion_equals_the_engines_offline_greedy_output(server):
    want, prompt_tokens = _offline_greedy(PROMPT, 24)
    r = httpx.post(
        f"{server.url}/completions",
        json={
            "model": "tiny",
            "prompt": PROMPT,
            "max_tokens": 24,
            "temperature": 0,
            "ignore_eos": True,
        },
        timeout=60,
    )
    body = r.json()
    assert body["choices"][0]["text"] == want
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 24,
        "total_tokens": prompt_tokens + 24,
    }


def test_streaming_sends_one_chunk_per_token_usage_and_done(server):
    want, _ = _offline_greedy(PROMPT, 12)
    with httpx.stream(
        "POST",
        f"{server.url}/completions",
        json={
            "prompt": PROMPT,
            "max_tokens": 12,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        timeout=60,
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    with_choice = [c for c in chunks if c["choices"]]
    assert len(with_choice) == 12 == chunks[-1]["usage"]["completion_tokens"]
    assert "".join(c["choices"][0]["text"] for c in with_choice) == want
    assert with_choice[-1]["choices"][0]["finish_reason"] == "length"


def test_chat_completion(server):
    r = httpx.post(
        f"{server.url}/chat/completions",
        json={
            "messages": [
                {"role": "system", "content": "short"},
                {"role": "user", "content": "a function that adds"},
            ],
            "max_tokens": 8,
            "temperature": 0,
        },
        timeout=60,
    )
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert 1 <= body["usage"]["completion_tokens"] <= 8


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": "x", "max_tokens": -3}, "max_tokens"),
        ({"prompt": "x", "temperature": "warm"}, "temperature"),
        ({"prompt": "x", "n": 3}, "n"),
        ({"messages": "hello"}, "prompt"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(server, body, param):
    r = httpx.post(f"{server.url}/completions", json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_request_over_the_size_limit_is_413(server):
    r = httpx.post(f"{server.url}/completions", json={"prompt": "x = 1\n" * 20000})
    assert r.status_code == 413


def test_full_queue_is_503_and_a_client_that_leaves_frees_its_place(server):
    """Eight long streams at once against a queue of four: four run, the rest get 503; the
    clients then hang up mid-stream and the server drops their requests."""

    async def go():
        statuses: list[int] = []
        everyone = asyncio.Event()
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            body = {"prompt": PROMPT, "max_tokens": 400, "ignore_eos": True, "stream": True}

            async def one():
                async with client.stream("POST", "/completions", json=body) as r:
                    statuses.append(r.status_code)
                    if len(statuses) == 8:
                        everyone.set()
                    await asyncio.wait_for(everyone.wait(), 60)  # all answered: then leave
                    if r.status_code == 200:
                        async for _ in r.aiter_lines():
                            break  # one line of the stream, then hang up
                    else:
                        await r.aread()
                    return r.status_code, r.headers.get("retry-after")

            return await asyncio.gather(*(one() for _ in range(8)))

    results = asyncio.run(go())
    codes = sorted(c for c, _ in results)
    assert codes.count(200) == 4 and codes.count(503) == 4
    assert {ra for c, ra in results if c == 503} == {"1"}
    health = server.url.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + 20
    while httpx.get(health).json()["pending"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(health).json()["pending"] == 0

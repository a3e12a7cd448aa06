"""The OpenAI-compatible routes in process (Starlette's TestClient): shapes, streams, errors.

The real server is started as a subprocess in tests/integration/test_serve.py; here the same
app runs in process over the tiny model, for the details of the API subset.
"""

import dataclasses
import json

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from effbench.suite.serve.app import create_app  # noqa: E402
from effbench.suite.serve.engine_loop import EngineLoop, Job  # noqa: E402
from effbench.suite.serve.limits import BodyLimit  # noqa: E402
from effbench.suite.serve.main import ServeOptions, build_state  # noqa: E402
from effbench.suite.serve.text import TextStream, render_chat  # noqa: E402


@pytest.fixture(scope="module")
def state():
    st = build_state(ServeOptions(device="cpu", max_queue=4))
    st.loop.start()
    yield st
    st.loop.stop()


@pytest.fixture(scope="module")
def client(state):
    with TestClient(BodyLimit(create_app(state), 4096)) as c:
        yield c


def _events(resp):
    return [line[6:] for line in resp.text.split("\n\n") if line.startswith("data: ")]


def test_models_lists_the_served_model(client):
    data = client.get("/v1/models").json()["data"]
    assert data[0]["id"] == "tiny" and data[0]["max_model_len"] == 1024
    assert "scheduler=continuous-batching" in data[0]["techniques"]


def test_completion_with_usage(client):
    r = client.post(
        "/v1/completions",
        json={"prompt": "def add(a, b):", "max_tokens": 5, "temperature": 0, "ignore_eos": True},
    )
    body = r.json()
    assert r.status_code == 200 and body["object"] == "text_completion"
    assert body["usage"]["completion_tokens"] == 5 and body["choices"][0]["finish_reason"] == (
        "length"
    )


def test_stream_one_chunk_per_token_then_usage_then_done(client):
    req = {
        "prompt": "import os\n",
        "max_tokens": 6,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    r = client.post("/v1/completions", json=req)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = _events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len([c for c in chunks if c["choices"]]) == 6
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 6
    streamed = "".join(c["choices"][0]["text"] for c in chunks if c["choices"])
    whole = client.post("/v1/completions", json={**req, "stream": False}).json()
    assert streamed == whole["choices"][0]["text"]


def test_chat_stream_puts_the_role_in_the_first_content_chunk(client):
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "add two numbers"}],
            "max_tokens": 3,
            "stream": True,
            "temperature": 0,
            "ignore_eos": True,
        },
    )
    chunks = [json.loads(e) for e in _events(r)[:-1]]
    assert len(chunks) == 3 and chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
        ({"prompt": "x", "temperature": "hot"}, 400, "temperature"),
        ({"prompt": "x", "n": 2}, 400, "n"),
        ({"prompt": "x", "stop": ["\n"]}, 400, "stop"),
        ({"prompt": "x", "max_tokens": 5000}, 400, "max_tokens"),
        ({"prompt": "x", "model": "gpt-4"}, 404, "model"),
        ({"max_tokens": 3}, 400, "prompt"),
        ({"prompt": [1, 99999]}, 400, "prompt"),
    ],
)
def test_bad_fields_are_named(client, body, status, param):
    r = client.post("/v1/completions", json=body)
    assert r.status_code == status and r.json()["error"]["param"] == param


def test_body_over_the_limit_is_413(client):
    r = client.post("/v1/completions", json={"prompt": "x" * 5000})
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def test_full_queue_is_503(state):
    """A loop that is not started keeps what it admits: one pending job fills max_queue=1."""
    idle = dataclasses.replace(state, loop=EngineLoop(lambda: state.loop.engine, max_queue=1))
    assert idle.loop.submit(Job(10_000, [1], 1, None, 0.0, lambda e: None))
    with TestClient(create_app(idle)) as c:
        r = c.post("/v1/completions", json={"prompt": "x", "max_tokens": 1})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "server_busy"


def test_chat_template_and_text_stream():
    assert render_chat([("system", "be brief"), ("user", "a\nb"), ("assistant", "x = 1")]) == (
        "# system: be brief\n# user: a\n# user: b\nx = 1\n"
    )

    class Bytes:
        def decode(self, ids):
            return bytes(ids).decode("utf-8", "replace")

    ts = TextStream(Bytes())
    euro = list("€".encode())
    assert ts.push(euro[:1]) == "" and ts.push(euro[1:2]) == ""
    assert ts.push(euro[2:]) == "€" and ts.push([33], last=True) == "!"


def test_any_registered_techniques_plug_in_and_a_speculative_chunk_carries_several_tokens():
    """The issue's example slots plus a speculative decoder: a step that accepts drafts emits
    several tokens, as one chunk; the chunks' tokens add up to the usage."""
    st = build_state(
        ServeOptions(device="cpu", techniques=("chunked-prefill", "kivi:bits=2", "speculative:k=3"))
    )
    assert "cache=kivi:bits=2" in st.techniques and "decoder=speculative:k=3" in st.techniques
    st.loop.start()
    try:
        with TestClient(create_app(st)) as c:
            r = c.post(
                "/v1/completions",
                json={
                    "prompt": "def add(a, b):\n    return",
                    "max_tokens": 24,
                    "temperature": 0,
                    "ignore_eos": True,
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            )
    finally:
        st.loop.stop()
    chunks = [json.loads(e) for e in _events(r)[:-1]]
    usage = chunks[-1]["usage"]
    with_choice = [ch for ch in chunks if ch["choices"]]
    assert usage["completion_tokens"] == 24
    assert len(with_choice) < 24  # at least one step accepted draft tokens

"""Chunks to timelines: token counts from usage or a tokenizer, the split rule, HTTP errors."""

import pytest

from effbench.suite.endpoint_client import (
    Chunk,
    Outcome,
    _apply,
    describe_http_error,
    request_body,
)
from effbench.suite.endpoint_timelines import spread, timeline_of


class WordTokenizer:
    """One token per space-separated word."""

    def encode(self, text):
        return text.split()


def _out(texts, usage=None, error=None, start=1_000):
    chunks = [Chunk(start + 1_000_000 * (i + 1), t) for i, t in enumerate(texts)]
    return Outcome(start, chunks, usage, error)


def test_spread_keeps_one_per_slot_and_sums_to_total():
    assert spread(5, [0, 2, 0]) == [1, 3, 1]
    assert spread(7, [1, 1, 1]) == [3, 2, 2]
    assert spread(2, [5, 5, 5]) == [1, 1, 1]  # fewer tokens than slots: one each
    assert sum(spread(101, [0.3, 2.5, 7])) == 101


def test_one_token_per_chunk_when_usage_matches():
    c = timeline_of(_out(["a", "b", ""], {"prompt_tokens": 9, "completion_tokens": 3}), 0, 4)
    assert [n for _, n in c.timeline.emissions] == [1, 1, 1]
    assert c.timeline.prompt_tokens == 9 and c.timeline.finished
    assert (c.output_count, c.prompt_count, c.split) == ("usage", "usage", "one-per-chunk")
    assert c.timeline.arrival_s == pytest.approx(1e-6)
    assert c.timeline.emissions[0][0] == pytest.approx(1e-3 + 1e-6)


def test_a_closing_chunk_with_only_finish_reason_is_not_a_token():
    """transformers serve: one token per chunk, then ``{"text": "", "finish_reason"}`` with
    the usage."""
    c = timeline_of(_out(["a", "b", "c", ""], {"completion_tokens": 3}), 0, 4)
    assert [n for _, n in c.timeline.emissions] == [1, 1, 1]
    assert c.split == "one-per-text-chunk"
    assert c.timeline.emissions[-1][0] == pytest.approx(3e-3 + 1e-6)


def test_multi_token_chunks_split_by_tokenizer_and_role_chunk_dropped():
    out = _out(["", "x y", "z", "p q r"], {"completion_tokens": 6})
    c = timeline_of(out, 0, 4, WordTokenizer())
    assert [n for _, n in c.timeline.emissions] == [2, 1, 3]
    assert c.split == "tokenizer" and c.timeline.output_tokens == 6


def test_without_tokenizer_usage_is_spread_evenly():
    c = timeline_of(_out(["x y", "z", "p q r"], {"completion_tokens": 7}), 0, 4)
    assert [n for _, n in c.timeline.emissions] == [3, 2, 2] and c.split == "even"


def test_no_usage_counts_with_the_tokenizer_and_says_so():
    c = timeline_of(_out(["a b ", "c"]), 0, 5, WordTokenizer())
    assert c.output_count == "tokenizer" and c.prompt_count == "local"
    assert c.timeline.prompt_tokens == 5 and c.timeline.output_tokens == 3


def test_failed_request_is_unfinished_with_its_error():
    c = timeline_of(_out(["a"], error="HTTP 400: field 'max_tokens': too big"), 0, 3)
    assert not c.timeline.finished and c.error.startswith("HTTP 400")
    c = timeline_of(_out([]), 0, 3)
    assert not c.timeline.finished and "without any chunk" in c.error


@pytest.mark.parametrize(
    "body, field",
    [
        (b'{"error": {"message": "bad", "param": "max_tokens"}}', "max_tokens"),
        (
            b'{"detail": [{"loc": ["body", "ignore_eos"], "msg": "Extra inputs"}]}',
            "ignore_eos",
        ),
        (b'{"error": "Unexpected keys in the request: {\'ignore_eos\'}"}', "ignore_eos"),
        (b"plain text about temperature", "temperature"),
    ],
)
def test_http_errors_name_the_field(body, field):
    sent = request_body("completions", "m", "p", 4, ignore_eos=True)
    text = describe_http_error(422, body, sent)
    assert text.startswith("HTTP 422: field '") and f"'{field}'" in text


def test_chat_and_completion_chunks_and_usage_are_read():
    out = Outcome(0)
    _apply(out, '{"choices": [{"delta": {"role": "assistant", "content": "hi"}}]}', 5, "chat")
    _apply(out, '{"choices": [], "usage": {"completion_tokens": 1}}', 6, "chat")
    _apply(out, "[DONE]", 7, "chat")
    assert out.text == "hi" and out.usage == {"completion_tokens": 1} and out.done
    out = Outcome(0)
    _apply(out, '{"choices": [{"text": "x", "finish_reason": "length"}]}', 5, "completions")
    assert out.chunks == [Chunk(5, "x", "length")]


def test_other_clients_itl_from_the_same_timelines():
    from effbench.suite.serving_metrics import RequestTimeline, client_itl, weighted_median

    a = RequestTimeline(0.0, ((1.0, 1), (1.1, 1), (1.4, 1)), 3)  # gaps .1 .3, tpot .2
    b = RequestTimeline(0.0, ((2.0, 1), (2.2, 2)), 3)  # one gap .2 for 2 tokens, tpot .1
    got = client_itl([a, b])
    assert got["itl_vllm_median"] == pytest.approx(0.2)  # median chunk gap of .1 .3 .2
    assert got["itl_guidellm_median"] == pytest.approx(0.1)  # weights 2 and 2: the lower
    assert weighted_median([3.0, 1.0, 2.0], [1, 1, 5]) == 2.0


def test_server_errors_and_unrelated_words_name_no_field():
    sent = request_body("completions", "m", "p", 4, ignore_eos=False)
    busy = b'{"error": {"message": "the queue is full; retry later", "param": null}}'
    assert describe_http_error(503, busy, sent) == "HTTP 503: the queue is full; retry later"
    assert "field" not in describe_http_error(500, b"internal error in model forward", sent)
    assert "field" not in describe_http_error(400, b"streaming is fine; promptly refused", sent)

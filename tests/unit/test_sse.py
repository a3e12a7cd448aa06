"""The SSE parser: events split anywhere, every line ending, and what counts as not SSE."""

import pytest

from effbench.suite.sse import SSEError, SSEParser


def _all(chunks):
    p = SSEParser()
    out = [e for c in chunks for e in p.feed(c)]
    return out + p.close()


def test_events_come_out_whole_however_the_bytes_are_split():
    stream = b'data: {"a": 1}\n\n: keep-alive\n\nevent: x\nid: 3\ndata: [DONE]\n\n'
    whole = _all([stream])
    assert whole == ['{"a": 1}', "[DONE]"]
    assert _all([stream[i : i + 1] for i in range(len(stream))]) == whole


@pytest.mark.parametrize("end", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(end):
    assert _all([b"data: x" + end + b"data: y" + end + end]) == ["x\ny"]


def test_crlf_split_between_reads_is_one_line_end():
    assert _all([b"data: x\r", b"\n\r", b"\n"]) == ["x"]


def test_last_event_without_blank_line_is_kept_at_close():
    assert _all([b"data: tail"]) == ["tail"]


@pytest.mark.parametrize(
    "bad", [b'{"id": "cmpl-1", "choices": []}\n', b"<html>oops</html>\n", b"data: \xff\xfe\n"]
)
def test_not_sse_names_the_first_bad_bytes(bad):
    with pytest.raises(SSEError) as e:
        _all([b"data: ok\n\n", bad])
    assert e.value.bad == bad.rstrip(b"\n")
    assert repr(bad.rstrip(b"\n")[:20])[2:-1] in str(e.value)

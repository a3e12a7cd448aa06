"""``[serving] endpoint``: preset keys, the endpoint case, and the one-line preflight errors."""

import socket

import pytest

from effbench.suite import presets
from effbench.suite.cases import expand
from effbench.suite.errors import ConfigError
from effbench.suite.runner import filter_cases

ENDPOINT_ONLY = """
[serving]
endpoint = "http://127.0.0.1:9/v1/"
endpoint_name = "my-server"
requests = 4
rate = inf
max_concurrency = 2
"""


def test_an_endpoint_preset_needs_no_bench_and_gives_one_endpoint_case():
    p = presets.parse(ENDPOINT_ONLY, "e.toml")
    assert p.serving.endpoint == "http://127.0.0.1:9/v1"
    (case,) = expand(p, "cpu")
    assert (case.technique, case.family, case.level, case.params) == (
        "my-server",
        "scheduling",
        "serving",
        (),
    )
    assert case.endpoint == p.serving.endpoint and case.workload.endswith("-c2")
    assert "127.0.0.1" not in case.case_id  # the address is not part of the identity
    assert filter_cases([case], ["my-server"], None) == [case]


def test_endpoint_replaces_the_benches_serving_cases_only():
    smoke = presets.load("smoke")
    before = expand(smoke, "cpu")
    after = expand(presets.with_endpoint(smoke, "http://localhost:8000/v1", "srv"), "cpu")
    assert [c for c in after if c.level != "serving"] == [c for c in before if c.level != "serving"]
    served = [c for c in after if c.level == "serving"]
    assert [c.technique for c in served] == ["srv"]
    assert "-c" not in served[0].workload  # no concurrency limit: the workload name is as before


@pytest.mark.parametrize(
    "keys, message",
    [
        ({"endpoint": '"localhost:8000"'}, "not an http(s) URL"),
        ({"endpoint_name": '"chunked-prefill"'}, "is a registered technique"),
        ({"endpoint_name": '"a b"'}, "must be a non-empty name"),
        ({"endpoint_api": '"embeddings"'}, "not one of ['completions', 'chat']"),
        ({"max_concurrency": "-1"}, "must be >= 0"),
    ],
)
def test_bad_endpoint_keys_fail_with_file_and_line(keys, message):
    good = {"endpoint": '"http://127.0.0.1:9/v1"', "endpoint_name": '"srv"'}
    text = "[serving]\n" + "".join(f"{k} = {v}\n" for k, v in {**good, **keys}.items())
    with pytest.raises(ConfigError) as e:
        presets.parse(text, "e.toml")
    assert message in str(e.value) and str(e.value).startswith("e.toml:")


def test_with_endpoint_names_the_flag():
    with pytest.raises(ConfigError, match="^--endpoint: "):
        presets.with_endpoint(presets.load("smoke"), "ftp://x", None)


def test_unreachable_endpoint_is_one_line_before_the_run():
    pytest.importorskip("httpx")
    from effbench.suite.levels.serving_endpoint import preflight

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = presets.parse(ENDPOINT_ONLY.replace(":9/", f":{port}/"), "e.toml")
    with pytest.raises(ConfigError) as e:
        preflight(p)
    text = str(e.value)
    assert "\n" not in text and "is unreachable" in text and f":{port}/v1/models" in text

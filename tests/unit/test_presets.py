"""Presets are validated before anything runs, with file:line and the valid choices."""

import pytest

from effbench.suite import presets
from effbench.suite.cases import expand
from effbench.suite.errors import ConfigError

GOOD = """
[run]
name = "t"
case_budget_s = 0.5

[kernel.attention]
shapes = [{ name = "p64", batch = 1, q_len = 64, kv_len = 64 }]

[[bench]]
technique = "dense"
levels = ["kernel"]

[[bench]]
technique = "streaming-llm"
levels = ["kernel"]
params = { window = [16, 32], sinks = 4 }
"""


def test_good_preset_expands_to_cases():
    p = presets.parse(GOOD, "good.toml")
    cases = expand(p, "cpu")
    assert [c.technique for c in cases] == ["dense", "streaming-llm", "streaming-llm"]
    assert {c.param_dict["window"] for c in cases[1:]} == {16, 32}
    assert len({c.case_id for c in cases}) == 3


@pytest.mark.parametrize(
    "text, line, words",
    [
        (GOOD.replace('technique = "dense"', 'technique = "denze"'), 10, ["unknown technique",
                                                                        "dense"]),
        (GOOD.replace("window = [16, 32]", "windw = [16, 32]"), 16, ["no parameter",
                                                                    "window", "sinks"]),
        (GOOD.replace("window = [16, 32]", "window = [16, 0]"), 16, ["out of range"]),
        (GOOD.replace('case_budget_s = 0.5', 'case_budget = 0.5'), 4, ["unknown key",
                                                                     "case_budget_s"]),
        (GOOD.replace('levels = ["kernel"]\nparams', 'levels = ["serving"]\nparams'), 15,
         ["does not run at level", "kernel", "engine"]),
        (GOOD.replace("sinks = 4", 'sinks = "4"'), 16, ["must be int"]),
    ],
)
def test_bad_presets_name_file_line_and_choices(text, line, words):
    with pytest.raises(ConfigError) as e:
        presets.parse(text, "bad.toml")
    msg = str(e.value)
    assert msg.startswith(f"bad.toml:{line}:"), msg
    for w in words:
        assert w in msg


def test_builtin_presets_validate():
    names = presets.builtin_presets()
    assert {"smoke", "cpu-default"} <= set(names)
    for n in names:
        assert expand(presets.load(n), "cpu")


def test_unknown_preset_lists_builtins():
    with pytest.raises(ConfigError, match="smoke"):
        presets.load("nope")


def test_invalid_toml_is_a_config_error():
    with pytest.raises(ConfigError, match="not valid TOML"):
        presets.parse("[run\n", "x.toml")


def test_gate_section_is_validated_before_anything_runs():
    p = presets.parse(GOOD + "\n[gate]\ntiming_effect = 0.1\nalpha = 0.05\n", "g.toml")
    assert dict(p.gate) == {"timing_effect": 0.1, "alpha": 0.05}
    with pytest.raises(ConfigError, match="unknown threshold 'timing'") as e:
        presets.parse(GOOD + "\n[gate]\ntiming = 0.1\n", "g.toml")
    assert str(e.value).startswith("g.toml:19:")

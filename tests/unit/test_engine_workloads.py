"""``[engine] workload``: names parsed or refused with the choices; positions; items."""

from __future__ import annotations

import pytest

from effbench.kernels_ref.checkpoint import load_checkpoint
from effbench.suite.engine_workloads import check_fits, parse_workload, workload_items
from effbench.suite.errors import ConfigError
from effbench.suite.presets import parse

PRESET = """
[run]
name = "t"
model = "tiny"
[engine]
prompts = 2
workload = "{wl}"
[[bench]]
technique = "dense"
levels = ["engine"]
"""


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("eval", "eval16-b8-n32"),  # unchanged from before workloads existed: baselines still match
        ("editing", "editing-p16-b8-n32"),
        ("long-eval:2048", "long-eval:2048-p16-b8-n32"),
        ("retrieval:needle:1024:depth=0.25", "retrieval:needle:1024:depth=0.25-p16-b8-n32"),
    ],
)
def test_labels(name: str, label: str) -> None:
    assert parse_workload(name).label(16, 8, 32) == label


def test_retrieval_options() -> None:
    wl = parse_workload("retrieval:multi-needle:2048:depth=0.1:distractors=2:seed=7")
    assert wl.retrieval is not None
    assert (wl.retrieval.needles, wl.retrieval.depth, wl.retrieval.distractors,
            wl.retrieval.seed) == (3, 0.1, 2, 7)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("evals", "no workload kind 'evals'"),
        ("eval:3", "'eval' takes no arguments"),
        ("long-eval:3000", r"long-eval length must be one of \[1024, 2048, 4096\]"),
        ("retrieval:needle", "retrieval needs a task"),
        ("retrieval:needle:512:depth=2", r"depth must be in \[0, 1\]"),
        ("retrieval:needle:512:width=2", "retrieval option 'width=2' is not key=value"),
        ("retrieval:needle:512:depth=deep", "needs a number"),
    ],
)
def test_bad_names_name_the_problem_and_the_choices(name: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as e:
        parse_workload(name)
    assert "valid workloads: eval, long-eval:<length>, retrieval:" in str(e.value)


def test_preset_refuses_a_bad_workload_at_its_line() -> None:
    with pytest.raises(ConfigError, match=r"p.toml:7: unknown workload 'long:1'"):
        parse(PRESET.format(wl="long:1"), "p.toml")
    assert parse(PRESET.format(wl="long-eval:1024"), "p.toml").engine.workload == "long-eval:1024"


def test_positions_are_checked_against_the_model() -> None:
    check_fits(parse_workload("long-eval:1024"), 1024, 32, "tiny")
    with pytest.raises(ValueError, match=r"needs 2048 positions .* model 'tiny' was trained for "
                       r"1024 \(max_position_embeddings\)"):  # fmt: skip
        check_fits(parse_workload("long-eval:2048"), 1024, 32, "tiny")
    with pytest.raises(ValueError, match="needs 1088 positions"):
        check_fits(parse_workload("retrieval:needle:1024"), 1024, 64, "tiny")


def test_items_of_each_workload() -> None:
    tok = load_checkpoint("tiny-target")[1]
    long = workload_items(parse_workload("long-eval:1024"), tok, 3)
    assert len(long) == 3 and all(len(p) + len(c) == 1024 for p, c in long)
    ret = workload_items(parse_workload("retrieval:signature:300"), tok, 4)
    assert len(ret) == 4 and all(len(p) == 300 and p[0] == tok.bos_id for p, _ in ret)
    assert workload_items(parse_workload("retrieval:signature:300"), tok, 4) == ret
    ed = workload_items(parse_workload("editing"), tok, 2)
    assert len(ed) == 2 and all(p[0] == tok.bos_id and c for p, c in ed)


@pytest.mark.parametrize(
    ("workload", "why"),
    [
        ("long-eval:2048", r"needs 2048 positions .* model 'tiny' was trained for 1024"),
        ("retrieval:needle:20", r"more than the requested length 20; use length >= \d+"),
    ],
)
def test_runner_refuses_a_workload_that_does_not_fit_before_any_work(tmp_path, workload, why):
    from effbench.suite import runner

    preset = parse(PRESET.format(wl=workload), "p.toml")
    with pytest.raises(ConfigError, match=r"p.toml: \[engine\] workload: .*" + why):
        runner.run(preset, results=str(tmp_path), progress=False, log=lambda _: None)
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir())  # refused before a run folder was made

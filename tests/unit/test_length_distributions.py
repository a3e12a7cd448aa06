"""Serving workloads with length distributions: samplers, histogram files, presets, a real run.

Covers effbench.suite.workloads (``zipf``, ``empirical`` and the LengthSpec around them), the
``[serving] prompt_len`` / ``output_len`` preset keys, and one small serving run whose requests
must have exactly the drawn prompt and output lengths (seeds ``[run] seed + 1`` and ``+ 2``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from effbench.suite import artifacts, presets, runner
from effbench.suite.cases import expand, workload_names
from effbench.suite.context import RunContext
from effbench.suite.errors import ConfigError
from effbench.suite.levels import serving
from effbench.suite.serving_metrics import load_timelines
from effbench.suite.store_rows import frame_to_records, records_to_frame
from effbench.suite.workloads import (
    LENGTH_KINDS,
    LengthSpec,
    empirical_lengths,
    read_length_histogram,
    zipf_lengths,
)

# --------------------------------------------------------------------------------------------
# Samplers

SPECS = [
    LengthSpec("fixed", value=7),
    LengthSpec("uniform", low=3, high=40),
    LengthSpec("lognormal", median=20, sigma=0.8, low=4, high=90),
    LengthSpec("zipf", a=1.2, low=4, high=64),
    LengthSpec("zipf", a=0.5, low=1, high=30),
    LengthSpec("empirical", histogram=((16, 1.0), (64, 2.0), (256, 7.0))),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.kind)
def test_every_kind_stays_in_bounds_and_is_reproducible_from_its_seed(spec):
    a = spec.sample(5000, seed=11)
    assert a.dtype == np.int64 and a.shape == (5000,)
    assert a.min() >= 1 and a.max() <= spec.max_length
    if spec.kind in ("uniform", "lognormal", "zipf"):
        assert a.min() >= spec.low and a.max() <= spec.high
    assert np.array_equal(a, spec.sample(5000, seed=11))
    if spec.kind != "fixed":
        assert not np.array_equal(a, spec.sample(5000, seed=12))
    assert spec.sample(0, seed=1).shape == (0,)


def test_zipf_rank_frequency_is_monotone_and_follows_the_power_law():
    a, low, high = 1.2, 4, 64
    draws = zipf_lengths(a, low, high, 200_000, seed=0)
    counts = np.bincount(draws - low, minlength=high - low + 1)
    head = counts[:10]  # the head, where counts are large enough to order reliably
    assert np.all(np.diff(head) < 0), head
    ranks = np.arange(1, high - low + 2, dtype=float)
    pmf = ranks**-a / np.sum(ranks**-a)
    assert np.max(np.abs(counts / counts.sum() - pmf)) < 0.005
    assert counts[0] / counts[1] == pytest.approx(2**a, rel=0.05)  # rank 1 vs rank 2
    assert counts[0] / counts[3] == pytest.approx(4**a, rel=0.08)


def test_a_larger_zipf_exponent_concentrates_mass_on_the_shortest_lengths():
    shares, means = [], []
    for a in (0.5, 1.0, 1.5, 2.5):  # a <= 1 is fine: the support is bounded
        d = zipf_lengths(a, 1, 100, 50_000, seed=3)
        shares.append(np.mean(d == 1))
        means.append(d.mean())
    assert shares == sorted(shares) and means == sorted(means, reverse=True)
    assert shares[-1] > 0.7 and shares[0] < 0.1


def test_empirical_proportions_match_the_counts():
    hist = ((16, 1.0), (64, 2.0), (100, 0.0), (256, 7.0))
    draws = empirical_lengths(hist, 100_000, seed=5)
    assert set(np.unique(draws).tolist()) == {16, 64, 256}  # a zero count is never drawn
    for length, share in ((16, 0.1), (64, 0.2), (256, 0.7)):
        assert np.mean(draws == length) == pytest.approx(share, abs=0.01)


def test_length_spec_bound_json_label_and_unused_parameters():
    z = LengthSpec("zipf", a=1.2, low=4, high=64)
    assert z.max_length == 64 and z.label() == "zipf1.2-4-64"
    assert z.to_json() == {"kind": "zipf", "a": 1.2, "low": 4, "high": 64}
    ln = LengthSpec("lognormal", median=96, sigma=0.6, low=16, high=512)
    assert ln.label() == "ln96s0.6-16-512" and ln.max_length == 512
    emp = LengthSpec("empirical", histogram=((8, 1.0), (300, 0.0), (40, 2.0)))
    assert emp.max_length == 40  # a zero-count length is never drawn
    assert emp.to_json()["histogram"] == [[8, 1.0], [300, 0.0], [40, 2.0]]
    assert emp.label().startswith("emp-hist-")
    with pytest.raises(ValueError, match="'a' does not apply to length kind 'uniform'"):
        LengthSpec("uniform", low=1, high=4, a=2.0)
    with pytest.raises(ValueError, match="histogram"):
        LengthSpec("fixed", value=3, histogram=((1, 1.0),))
    with pytest.raises(ValueError, match="exponent"):
        LengthSpec("zipf", a=float("inf"), high=4)
    with pytest.raises(ValueError, match="low <= high"):
        LengthSpec("zipf", a=1.0, low=9, high=4)
    with pytest.raises(ValueError, match="one > 0"):
        LengthSpec("empirical", histogram=((8, 0.0),))
    with pytest.raises(ValueError, match="distinct"):
        LengthSpec("empirical", histogram=((8, 1.0), (8, 2.0)))


# --------------------------------------------------------------------------------------------
# Histogram files


def test_histogram_file_comments_blank_lines_weights_bom_and_crlf(tmp_path):
    f = tmp_path / "h.csv"
    f.write_bytes(
        "\ufeff# from a production trace\r\n\r\nLength, Weight\r\n16,0.5  # short\r\n"
        "64,1.5\r\n".encode()
    )
    assert read_length_histogram(f) == ((16, 0.5), (64, 1.5))
    spec = LengthSpec("empirical", file=str(f))
    assert spec.histogram == ((16, 0.5), (64, 1.5)) and len(spec.file_sha256) == 64
    assert spec.to_json() == {"kind": "empirical", "file": str(f), "sha256": spec.file_sha256}
    assert spec.label() == f"emp-h-{spec.file_sha256[:8]}"


MALFORMED = [
    ("", 1, "no header"),
    ("# only a comment\n\n", 2, "no header"),
    ("len,count\n16,1\n", 1, "header 'len,count'"),
    ("length,count,extra\n16,1\n", 1, "header"),
    ("length,count\n", 1, "no rows after the header"),
    ("length,count\n16,1\n32\n", 3, "1 fields"),
    ("length,count\n16,1\n32,1,2\n", 3, "3 fields"),
    ("# c\nlength,count\n16,1\nabc,2\n", 4, "length 'abc' is not an integer"),
    ("length,count\n16.5,2\n", 2, "length '16.5' is not an integer"),
    ("length,count\n0,2\n", 2, "length 0 is < 1"),
    ("length,count\n-3,2\n", 2, "length -3 is < 1"),
    ("length,count\n16,-1\n", 2, "count '-1' is not an integer >= 0"),
    ("length,count\n16,many\n", 2, "count 'many' is not"),
    ("length,count\n16,1.5\n", 2, "count '1.5' is not an integer >= 0"),
    ("length,weight\n16,-0.5\n", 2, "weight '-0.5' is not a finite number >= 0"),
    ("length,weight\n16,nan\n", 2, "weight 'nan'"),
    ("length,weight\n16,inf\n", 2, "weight 'inf'"),
    ("length,count\n16,\n", 2, "count ''"),
    ("length,count\n16,0\n\n32,0\n", 2, "every count is 0"),
    ("length,count\n16,1\n32,1\n16,4\n", 4, "length 16 repeats line 2"),
]


@pytest.mark.parametrize("content, line, words", MALFORMED)
def test_a_malformed_histogram_is_refused_with_one_line_naming_file_and_line(
    tmp_path, content, line, words
):
    f = tmp_path / "lengths.csv"
    f.write_text(content)
    with pytest.raises(ValueError) as e:
        read_length_histogram(f)
    msg = str(e.value)
    assert msg.startswith(f"{f}:{line}: "), msg
    assert words in msg and "expected" in msg and "length,count" in msg.replace("weight", "count")
    assert "\n" not in msg


def test_missing_directory_and_non_utf8_histograms(tmp_path):
    for path in (tmp_path / "nope.csv", tmp_path):
        with pytest.raises(ValueError) as e:
            read_length_histogram(path)
        assert str(e.value).startswith(f"{path}: cannot read") and "\n" not in str(e.value)
    f = tmp_path / "latin1.csv"
    f.write_bytes(b"length,count\n16,1\n# caf\xe9\n")
    with pytest.raises(ValueError, match=rf"^{f}:3: not UTF-8"):
        read_length_histogram(f)


# --------------------------------------------------------------------------------------------
# Presets

BASE = """[run]
seed = 5

[serving]
requests = 4
rate = 50.0
max_batch = 4
{extra}

[[bench]]
technique = "static-batching"
levels = ["serving"]
"""


def _preset(tmp_path: Path, extra: str) -> presets.Preset:
    path = tmp_path / "p.toml"
    path.write_text(BASE.format(extra=extra))
    return presets.load(str(path))


def test_without_distributions_the_serving_workload_is_unchanged(tmp_path):
    p = _preset(tmp_path, "output_tokens = 4")
    assert p.serving.prompt_len is None and p.serving.output_len is None
    assert workload_names(p, "serving", "scheduling") == ["poisson-r50-n4-o4"]


def test_distributions_parse_resolve_the_file_and_name_the_workload(tmp_path):
    (tmp_path / "out.csv").write_text("length,count\n4,3\n9,1\n")
    p = _preset(
        tmp_path,
        'prompt_len = { kind = "lognormal", median = 96, sigma = 0.6, low = 16, high = 512 }\n'
        'output_len = { kind = "empirical", file = "out.csv" }',
    )
    assert p.serving.prompt_len == LengthSpec("lognormal", median=96, sigma=0.6, low=16, high=512)
    out = p.serving.output_len
    assert out.file == str(tmp_path / "out.csv") and out.histogram == ((4, 3.0), (9, 1.0))
    (name,) = workload_names(p, "serving", "scheduling")
    assert name == f"poisson-r50-n4-pln96s0.6-16-512-oemp-out-{out.file_sha256[:8]}"
    sub = _preset(tmp_path, '\n[serving.output_len]\nkind = "zipf"\na = 1.2\nhigh = 64')
    assert sub.serving.output_len == LengthSpec("zipf", a=1.2, low=1, high=64)


@pytest.mark.parametrize(
    "extra, line, words",
    [
        (
            'prompt_len = { kind = "pareto", low = 1 }',
            8,
            ["unknown kind 'pareto'", "zipf", "empirical"],
        ),
        ("prompt_len = { low = 1 }", 8, ["no 'kind'", "valid kinds"]),
        (
            'output_len = { kind = "zipf", a = 1.2, hi = 8 }',
            8,
            ["unknown key 'hi'", "'a', 'low', 'high'"],
        ),
        ('output_len = { kind = "zipf", a = 1.2 }', 8, ["needs ['high']"]),
        ('output_len = { kind = "zipf", a = 0, high = 8 }', 8, ["exponent a > 0"]),
        ('output_len = { kind = "uniform", low = 9, high = 4 }', 8, ["low <= high"]),
        ('output_len = { kind = "uniform", low = "9", high = 4 }', 8, ["must be int"]),
        ('output_len = { kind = "fixed", value = 0 }', 8, ["must be >= 1"]),
        ('output_len = { kind = "lognormal", median = 0, sigma = 1 }', 8, ["median > 0"]),
        ("output_len = 8", 8, ["must be a table"]),
        (
            'output_tokens = 8\noutput_len = { kind = "fixed", value = 3 }',
            8,
            ["'output_len' and 'output_tokens'"],
        ),
    ],
)
def test_bad_length_settings_are_refused_at_load_with_file_line(tmp_path, extra, line, words):
    with pytest.raises(ConfigError) as e:
        _preset(tmp_path, extra)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'p.toml'}:{line}: "), msg
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_a_malformed_histogram_file_is_refused_at_preset_load(tmp_path):
    (tmp_path / "out.csv").write_text("length,count\n4,3\n9,-1\n")
    with pytest.raises(ConfigError) as e:
        _preset(tmp_path, 'output_len = { kind = "empirical", file = "out.csv" }')
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'out.csv'}:3: count '-1'"), msg
    assert f"[serving] output_len at {tmp_path / 'p.toml'}:8" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match=r"nope\.csv: cannot read"):
        _preset(tmp_path, 'output_len = { kind = "empirical", file = "nope.csv" }')


def test_prompt_plus_output_beyond_the_model_positions_is_refused(tmp_path):
    p = _preset(
        tmp_path,
        'prompt_len = { kind = "uniform", low = 16, high = 1000 }\n'
        'output_len = { kind = "zipf", a = 1.0, high = 64 }',
    )
    serving.check_lengths(p, 1064)
    with pytest.raises(ConfigError) as e:
        serving.check_lengths(p, 1024)
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'p.toml'}:8: ") and "\n" not in msg
    assert "1064 tokens exceeds the model's max_position_embeddings (1024)" in msg
    only_out = _preset(tmp_path, 'output_len = { kind = "uniform", low = 1, high = 950 }')
    serving.check_lengths(only_out, 1024)  # the eval prompts' length is not known yet
    with pytest.raises(ConfigError, match="longest eval prompt 97"):
        serving.check_lengths(only_out, 1024, eval_prompt_max=97)
    # the runner refuses it before any case runs (the tiny model has 1024 positions)
    with pytest.raises(ConfigError, match=r"max_position_embeddings \(1024\)"):
        runner.run(p, results=str(tmp_path / "results"), progress=False, log=lambda _: None)
    assert not any((tmp_path / "results" / "runs").iterdir())  # no run was started


# --------------------------------------------------------------------------------------------
# The serving level


def test_cut_prompts_start_with_bos_follow_the_stream_and_wrap():
    eval_tokens = [([1, 10, 11], [12]), ([1, 20], [21, 22]), ([1, 30], [])]
    # stream: 10 11 12 | 20 21 22 | 30; items start at 0, 3, 6
    got = serving.cut_prompts(eval_tokens, 1, [3, 5, 4, 1, 9])
    assert got == [
        [1, 10, 11],
        [1, 20, 21, 22, 30],
        [1, 30, 10, 11],
        [1],
        [1, 20, 21, 22, 30, 10, 11, 12, 20],
    ]


def test_a_serving_run_uses_exactly_the_drawn_lengths(tmp_path):
    p = _preset(
        tmp_path,
        'prompt_len = { kind = "uniform", low = 8, high = 160 }\n'
        'output_len = { kind = "zipf", a = 1.2, low = 2, high = 6 }',
    )
    (case,) = expand(p, "cpu")
    ctx = RunContext(p, torch.device("cpu"), torch.float32)
    ctx.memo[artifacts.KEY] = artifacts.CaseArtifacts(tmp_path / "run", 0)
    want_prompts = p.serving.prompt_len.sample(4, seed=5 + 1).tolist()
    want_outputs = p.serving.output_len.sample(4, seed=5 + 2).tolist()
    assert len(set(want_prompts)) > 1 and len(set(want_outputs)) > 1  # really drawn

    work = serving.plan(ctx)
    assert [len(q) for q in work.prompts] == want_prompts
    assert list(work.outputs) == want_outputs
    stream = [t for q, c in ctx.eval_tokens for t in (*q[1:], *c)]
    starts = np.cumsum([0] + [len(q) - 1 + len(c) for q, c in ctx.eval_tokens])
    for i, q in enumerate(work.prompts):  # real code from the stream, from item i's start
        assert q[0] == ctx.tokenizer.bos_id
        assert list(q[1:]) == stream[starts[i] : starts[i] + len(q) - 1]

    metrics = serving.run(case, ctx)
    stats = {m.metric: m.stats for m in metrics}
    for st in stats.values():
        assert st["prompt_len"] == {"kind": "uniform", "low": 8, "high": 160}
        assert st["output_len"] == {"kind": "zipf", "a": 1.2, "low": 2, "high": 6}
        assert (st["prompt_len_seed"], st["output_len_seed"]) == (6, 7)
        kept = {
            k: st[k] for k in ("prompt_len", "output_len", "prompt_len_seed", "output_len_seed")
        }
        assert json.loads(json.dumps(kept, allow_nan=False)) == kept  # plain JSON for the store
    rel = stats["ttft"]["timelines"]
    timelines = load_timelines(tmp_path / "run" / rel)
    assert [t.prompt_tokens for t in timelines] == want_prompts
    assert [t.output_tokens for t in timelines] == want_outputs
    meta = pq.read_schema(tmp_path / "run" / rel).metadata
    assert json.loads(meta[b"lengths"])["output_len_seed"] == 7

    # the records, with these stats, go through the store's table and back unchanged
    records = runner._records(case, "cpu", "r0", metrics)
    back = frame_to_records(records_to_frame(records))
    assert [r.stats["prompt_len"] for r in back] == [r.stats["prompt_len"] for r in records]
    assert {r.stats["output_len_seed"] for r in back} == {7}


def test_length_kinds_are_the_documented_ones():
    assert LENGTH_KINDS == ("fixed", "uniform", "lognormal", "zipf", "empirical")
    text = (Path(__file__).parents[2] / "docs" / "METRICS.md").read_text()
    for key in ("prompt_len", "output_len", *LENGTH_KINDS):
        assert f"`{key}`" in text, key

"""Engine-level runs on the long workloads with the shipped tiny-long: quality moves here.

On 2048-token cuts of held-out files the long model loses when its attention is cut to a
256-token window (that is what the workload exists for), and every record names its workload.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from effbench.kernels_ref.checkpoint import EMBEDDED
from effbench.suite import runner
from effbench.suite.presets import parse
from effbench.suite.store import load_records

pytestmark = pytest.mark.skipif(
    not (EMBEDDED["tiny-long"] / "config.json").is_file(),
    reason="tiny-long is not shipped (run `effbench train-tiny --stage long`)",
)

PRESET = """
[run]
name = "long-wl"
model = "tiny-long"
case_budget_s = 0.2
[engine]
workload = "{workload}"
prompts = 2
batch = 2
max_new_tokens = 4
min_repeats = 1
max_repeats = 1
[[bench]]
technique = "dense"
levels = ["engine"]
[[bench]]
technique = "streaming-llm"
params = {{ window = 252, sinks = 4 }}
levels = ["engine"]
"""


def _run(tmp_path: Path, workload: str) -> dict[tuple[str, str], float]:
    path = tmp_path / "p.toml"
    path.write_text(PRESET.format(workload=workload))
    preset = parse(path.read_text(), str(path))
    out = runner.run(preset, results=str(tmp_path / "res"), progress=False, log=lambda _: None)
    assert out.failed == 0
    frame = load_records(out.store.run_dir)
    assert set(frame["workload"]) == {f"{workload}-p2-b2-n4"}
    return {(r.technique, r.metric): r.value for r in frame.itertuples()}


@pytest.mark.slow
def test_a_window_loses_on_long_held_out_cuts(tmp_path: Path) -> None:
    got = _run(tmp_path, "long-eval:2048")
    dense, window = got[("dense", "perplexity")], got[("streaming-llm", "perplexity")]
    assert window > dense * 1.01, (dense, window)  # measured: 7.52 vs 7.65 (+1.7%)
    assert got[("streaming-llm", "top1_agreement")] < 1.0


@pytest.mark.slow
def test_retrieval_workload_reports_answer_exact_match(tmp_path: Path) -> None:
    got = _run(tmp_path, "retrieval:needle:1024:depth=0.0")
    for tech in ("dense", "streaming-llm"):
        assert 0.0 <= got[(tech, "answer_exact_match")] <= 1.0

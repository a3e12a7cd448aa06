"""The SKIP claims (suite/claims/tklqt.toml): a preset's ``[profile.tklqt]`` sweep stored in a
run, the transition cases it adds, and the claims decided on the H200 sweep committed under
results/gpu (a CPU run cannot measure TKLQT: there the claims are "not measurable").
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from effbench.profilers.tklqt import Transition, latency_transition
from effbench.suite import claim as claim_mod
from effbench.suite import runner
from effbench.suite.errors import ConfigError
from effbench.suite.presets import parse
from effbench.suite.profiling import sweep_records, sweep_workload
from effbench.suite.rules import FAILS, HOLDS, NOT_MEASURABLE, evaluate

GPU = Path(__file__).resolve().parents[2] / "results" / "gpu"
DEVICE = "cuda:NVIDIA H200"


def _gpu_records() -> list:
    """The H200 sweeps (eager and CUDA graphs, batch 1-32), as a ``[profile.tklqt]`` run would
    store them. That sweep predates the step-latency column: each batch-1 decode row gets the
    step time of the same engine and mode from the decode benchmark of the same session
    (results/gpu/compiled_cuda.json: 1000 / tokens per second at batch 1).
    """
    sweeps = json.loads((GPU / "tklqt_graphs.json").read_text())
    speed = json.loads((GPU / "compiled_cuda.json").read_text())["batches"]["1"]["tokens_per_s"]
    records = []
    for mode in ("off", "reduce-overhead"):
        rows = [dict(r) for r in sweeps[mode]["rows"]]
        for r in rows:
            if r["batch_size"] == 1 and r["phase"] == "decode":
                r["step_ms"] = 1000.0 / speed[f"effbench-{mode}"]
        t = sweeps[mode]["transition"]
        transition = Transition(t["batch_size"], t["floor_us"], t["knee_batch_size"])
        for case in sweep_records("gpu", rows, "", sweep_workload(64, 16, mode), DEVICE,
                                  transition):  # fmt: skip
            records += case
    return records


def test_kernel_fusion_claim_holds_on_the_h200_sweep() -> None:
    out = evaluate(claim_mod.get_claim("tklqt-kernel-fusion").rule, _gpu_records())
    assert out.verdict == HOLDS, out.detail
    # TKLQT per decode step at batch 1: 43 us as one graph against 2280 us eager
    assert out.measured == pytest.approx(43.224)
    assert "tklqt.step_ms" in out.detail and "kernels_per_step" in out.detail


def test_transition_claim_says_why_when_the_tiny_model_never_turns_gpu_bound() -> None:
    out = evaluate(claim_mod.get_claim("tklqt-transition").rule, _gpu_records())
    assert out.verdict == NOT_MEASURABLE
    assert "decode stays CPU-bound up to batch size 32" in out.detail


def _rows(t_lq: dict[int, float], idle: dict[int, float], ms: dict[int, float]) -> list[dict]:
    return [{"batch_size": b, "phase": "decode", "steps": 15, "kernels_per_step": 200.0,
             "tklqt_us_per_step": 200 * t_lq[b], "t_lq_median_us": t_lq[b],
             "gpu_idle_fraction": idle[b], "step_ms": ms[b]} for b in t_lq]  # fmt: skip


@pytest.mark.parametrize(("latency_knee", "verdict"), [(16, HOLDS), (128, FAILS)])
def test_transition_claim_compares_tklqt_with_step_latency(latency_knee, verdict) -> None:
    sizes = (1, 2, 4, 8, 16, 32, 64, 128)
    t_lq = {b: 10.0 if b < 16 else 10.0 * b / 4 for b in sizes}  # queues from 16 on
    idle = {b: 0.9 if b < 16 else 0.05 for b in sizes}
    ms = {b: 2.0 if b < latency_knee else 2.0 * b / 4 for b in sizes}
    rows = _rows(t_lq, idle, ms)
    import pandas as pd

    from effbench.profilers.tklqt import detect_transition

    transition = detect_transition(pd.DataFrame(rows))
    assert transition.batch_size == 16
    assert latency_transition(pd.DataFrame(rows)) == latency_knee
    records = [r for case in sweep_records("r", rows, "", "tklqt-p64-n16", DEVICE, transition)
               for r in case]  # fmt: skip
    out = evaluate(claim_mod.get_claim("tklqt-transition").rule, records)
    assert out.verdict == verdict, out.detail
    assert out.measured == pytest.approx(16 / latency_knee)


PRESET = """
[run]
name = "tklqt-sweep"
model = "tiny"
case_budget_s = 0.2
[engine]
prompts = 2
batch = 2
max_new_tokens = 4
min_repeats = 1
max_repeats = 1
[profile.tklqt]
batch_sizes = [1, 2]
compile = ["off", "reduce-overhead"]
prompt_len = 8
new_tokens = 3
[[bench]]
technique = "dense"
levels = ["engine"]
"""


def test_a_preset_sweep_lands_in_the_run_with_what_a_cpu_cannot_measure(tmp_path) -> None:
    from effbench.suite.store import frame_to_records, load_records

    path = tmp_path / "p.toml"
    path.write_text(PRESET)
    out = runner.run(parse(PRESET, str(path)), results=str(tmp_path / "res"), progress=False,
                     log=lambda _: None)  # fmt: skip
    recs = frame_to_records(load_records(out.store.run_dir))
    sweep = [r for r in recs if r.case_id.startswith("profile:tklqt")]
    eager = [r for r in sweep if r.workload == "tklqt-p8-n3"]
    graphs = [r for r in sweep if r.workload == "tklqt-p8-n3-compile-reduce-overhead"]
    # eager on the CPU: step latency per batch size and phase, TKLQT unavailable with why
    ms = {(r.params["batch_size"], r.params["phase"]): r.value for r in eager
          if r.metric == "tklqt.step_ms"}  # fmt: skip
    assert set(ms) == {(1, "prefill"), (1, "decode"), (2, "prefill"), (2, "decode")}
    assert all(v > 0 for v in ms.values())
    unavailable = {r.error for r in eager if r.metric == "tklqt.unavailable"}
    assert unavailable == {"no CUDA kernels in trace: no NVIDIA GPU"}
    trans = {r.metric: r for r in eager if r.params == {"phase": "decode"}}
    assert trans["tklqt.transition_batch"].status == "skipped"
    assert trans["tklqt.latency_transition_batch"].metric == "tklqt.latency_transition_batch"
    # CUDA graphs on a CPU: refused per batch size, with the reason, the run goes on
    assert graphs and all(r.status == "skipped" for r in graphs)
    assert any("CUDA graphs, which need a CUDA device" in r.error for r in graphs)
    assert any(r.metric == "decode_tokens_per_s" for r in recs)  # the bench case ran too
    # traces of the eager sweep are kept with the run
    assert list(Path(out.store.run_dir).glob("artifacts/tklqt/off/*.json.gz"))
    # a resumed run keeps the sweeps it has
    again = runner.run(parse(PRESET, str(path)), results=str(tmp_path / "res"),
                       resume=out.store.run_id, progress=False, log=lambda _: None)
    assert len(frame_to_records(load_records(again.store.run_dir))) == len(recs)


@pytest.mark.parametrize(("table", "message"), [
    ("[profile.tklqt]\nbatch_sizes = []", "'batch_sizes' must be a non-empty list"),
    ("[profile.tklqt]\nbatch_sizes = [0, 2]", "'batch_sizes' = 0 must be >= 1"),
    ("[profile.tklqt]\ncompile = [\"fast\"]", "compile mode 'fast' is not one of ['off', "),
    ("[profile.tklqt]\nsteps = 3", "unknown key 'steps'"),
    ("[profile.energy]\nx = 1", "unknown key 'energy' in [profile]"),
])
def test_bad_profile_tables_are_refused_with_the_valid_choices(table, message) -> None:
    text = PRESET.split("[profile.tklqt]")[0] + table + "\n[[bench]]\ntechnique = \"dense\"\n"
    with pytest.raises(ConfigError) as e:
        parse(text, "p.toml")
    assert message in str(e.value)
    assert "p.toml:" in str(e.value)  # located at its line


def test_sweep_workload_names_the_compile_mode() -> None:
    assert sweep_workload(64, 16, "off") == "tklqt-p64-n16"
    assert sweep_workload(64, 16, "reduce-overhead") == "tklqt-p64-n16-compile-reduce-overhead"

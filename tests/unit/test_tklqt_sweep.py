"""The TKLQT batch sweep on the real tiny model (CPU: traces kept, TKLQT unavailable)."""

import pandas as pd
import torch

from effbench.kernels_ref.checkpoint import EMBEDDED, load_checkpoint
from effbench.kernels_ref.engine import EngineResult, StepRecord
from effbench.profilers.kineto import load_trace
from effbench.profilers.tklqt_sweep import NO_KERNELS, phase_rows, sweep


def test_sweep_on_cpu_keeps_annotated_traces_and_says_why(tmp_path):
    model, _ = load_checkpoint(EMBEDDED["tiny-target"])
    out = sweep(model, [1, 2], tmp_path, prompt_len=8, new_tokens=3)
    assert len(out.traces) == 2
    if torch.cuda.is_available():  # pragma: no cover - the GPU machine
        assert not out.unavailable
        return
    assert out.unavailable == NO_KERNELS and out.transition is None
    trace = load_trace(out.traces[0])
    # one ProfilerStep annotation per engine iteration: prefill + 2 decode steps
    assert len(trace.steps) == 3
    # per batch size and phase: the step latency, timed without the profiler
    assert list(out.table["batch_size"]) == [1, 1, 2, 2]
    assert set(out.table["phase"]) == {"prefill", "decode"}
    assert (out.table["step_ms"] > 0).all()


def test_phase_rows_split_steps_by_the_engine_log():
    steps = [StepRecord(0, 1, 8, 0, 1), StepRecord(1, 2, 0, 1, 1), StepRecord(2, 3, 0, 1, 1)]
    res = EngineResult([], steps, 0, 3, {})
    summary = pd.DataFrame({
        "scope": ["all", "step 0", "step 1", "step 2"], "step": [-1, 0, 1, 2],
        "n_kernels": [30, 10, 10, 10], "tklqt_us": [90, 50, 20, 20],
        "t_lq_median_us": [5, 9, 4, 6], "gpu_idle_fraction": [0.5, 0.1, 0.8, 0.6],
    })
    timed = EngineResult([], [StepRecord(0, 4_000_000, 8, 0, 1), StepRecord(0, 1_000_000, 0, 1, 1),
                              StepRecord(0, 3_000_000, 0, 1, 1)], 0, 3, {})
    rows = {r["phase"]: r for r in phase_rows(res, summary, batch=4, timed=timed)}
    assert rows["prefill"]["step_ms"] == 4.0 and rows["decode"]["step_ms"] == 2.0
    assert rows["prefill"]["steps"] == 1 and rows["prefill"]["tklqt_us_per_step"] == 50
    assert rows["decode"]["steps"] == 2 and rows["decode"]["t_lq_median_us"] == 5
    assert rows["decode"]["gpu_idle_fraction"] == 0.7 and rows["decode"]["batch_size"] == 4

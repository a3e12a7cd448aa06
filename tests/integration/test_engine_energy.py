"""Per-phase energy at engine level, through a fake NVML at the hardware boundary.

The fake's counter integrates a settable power over real time, so the engine's prefill and
decode windows get exactly (power - idle power) x their duration; the test checks J/token and
J/request against the window durations the profiler itself recorded.
"""

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from effbench.profilers.energy import EnergyProfiler
from effbench.profilers.rapl import NullRAPL
from effbench.suite import presets
from effbench.suite.cases import expand
from effbench.suite.context import RunContext
from effbench.suite.levels import engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_nvml import RealtimeNVML  # noqa: E402

MINI = Path(__file__).parents[1] / "data" / "mini.toml"


@pytest.mark.parametrize("technique", ["streaming-llm"])
def test_engine_level_energy_per_phase(technique):
    preset = presets.load(str(MINI))
    preset = dataclasses.replace(preset, engine=dataclasses.replace(
        preset.engine, min_repeats=2, max_repeats=2, max_new_tokens=24))
    case = next(c for c in expand(preset, "cpu")
                if c.level == "engine" and c.technique == technique)
    ctx = RunContext(preset, torch.device("cpu"), torch.float32)
    nvml = RealtimeNVML(watts=20.0)
    prof = EnergyProfiler("cuda:0", nvml=nvml, rapl=NullRAPL("no RAPL"), idle_s=0.05,
                          counter_period_s=0.001)
    prof.start()  # idle baseline at 20 W
    nvml.set_watts(70.0)  # "busy" power while the case runs: net 50 W
    ctx.memo["energy"] = prof
    metrics = {m.metric: m for m in engine.run(case, ctx)}
    prof.stop()
    tech = [w for w in prof.windows if w.path.startswith("tech/")]
    assert {w.name for w in tech} == {"prefill", "decode"}
    seconds = {ph: sum(w.seconds for w in tech if w.name == ph) for ph in ("prefill", "decode")}
    requests = 2 * preset.engine.prompts  # two timed technique runs
    # every timed run prefills all prompts and decodes max_new_tokens - 1 tokens each
    decode_tokens = 2 * preset.engine.prompts * (preset.engine.max_new_tokens - 1)
    got = metrics["energy_per_token_decode"].value
    assert got == pytest.approx(50.0 * seconds["decode"] / decode_tokens, rel=0.05)
    total = 50.0 * (seconds["prefill"] + seconds["decode"])
    assert metrics["energy_per_request"].value == pytest.approx(total / requests, rel=0.05)
    assert metrics["energy_per_token_prefill"].value > 0

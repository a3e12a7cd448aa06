"""py-spy host profiler: raw-format parsing (always) and a real attach to this process."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from effbench.profilers.host import HostProfiler, is_python_frame, parse_raw, split_frame, summarize

RAW = """\
<module> (bench.py:6);Linear.forward (torch/nn/modules/linear.py:134);mkl_sgemm (libtorch_cpu.so) 60
<module> (bench.py:6);Linear.forward (torch/nn/modules/linear.py:134) 10
<module> (bench.py:7);loop (<string>:3) 25
0x7fa2 (libc.so.6);<module> (bench.py:5);time_time (libpython3.11.so.1.0) 5
"""


def test_parse_and_summarize_raw() -> None:
    stacks = parse_raw(RAW)
    assert sum(stacks.values()) == 100
    s = summarize(stacks, top=3)
    assert s.samples == 100
    assert s.python_share == pytest.approx(0.35)
    assert s.native_share == pytest.approx(0.65)
    assert [f.function for f in s.top] == ["mkl_sgemm", "loop", "Linear.forward"]
    assert s.top[0].location == "libtorch_cpu.so" and s.top[0].share == pytest.approx(0.6)
    assert s.top[2].location == "torch/nn/modules/linear.py:134"


def test_frame_kinds() -> None:
    assert split_frame("f (a.py:3)") == ("f", "a.py:3")
    assert split_frame("0x7fa2") == ("0x7fa2", "")
    assert is_python_frame("<module> (<string>:4)")
    assert not is_python_frame("at::native::linear (libtorch_cpu.so)")
    assert not is_python_frame("0x7fa2 (libc.so.6)")
    assert summarize(parse_raw("")).samples == 0


def _busy(seconds: float) -> None:
    a, t = torch.randn(128, 128), time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ a
        sum(i * i for i in range(500))


def test_pyspy_on_this_process(tmp_path: Path) -> None:
    prof = HostProfiler("cpu", tmp_path, rate_hz=200)
    ok, why = prof.available()
    if not ok:
        pytest.skip(f"py-spy cannot attach here: {why}")
    prof.start()
    _busy(1.5)
    res = prof.stop()
    assert not res.unavailable, res.unavailable
    assert res.metrics["samples"][0] > 10  # py-spy needs ~0.5 s to load symbols
    assert prof.summary is not None
    shares = res.metrics["python_share"][0] + res.metrics["native_share"][0]
    assert shares == pytest.approx(1.0)
    assert any("test_host.py" in f.location or "genexpr" in f.function or "_busy" in f.function
               or not is_python_frame(f"{f.function} ({f.location})") for f in prof.summary.top)
    assert Path(res.artifacts[0]).read_text().strip()


def test_missing_binary_says_so() -> None:
    ok, why = HostProfiler(binary="no-such-py-spy-binary").available()
    assert not ok and why.startswith("py-spy not installed")

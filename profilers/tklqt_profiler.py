"""``TKLQTProfiler``: record a torch.profiler trace around a block and report TKLQT from it.

The trace is always kept as a gzipped Chrome-trace artifact. TKLQT needs CUDA kernels with
their launch calls; on a machine without an NVIDIA GPU the trace has none, so the profiler still
runs (``available()`` is true) and reports TKLQT unavailable with the reason.
"""

from __future__ import annotations

import gzip
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from effbench.profilers.base import ProfileResult
from effbench.profilers.kineto import load_trace
from effbench.profilers.tklqt import kernel_table, summarize

METRIC_UNITS = {
    "n_kernels": "count", "tklqt_us": "us", "t_lq_median_us": "us", "t_lq_p90_us": "us",
    "launch_delay_sum_us": "us", "kernel_time_us": "us", "gpu_busy_us": "us",
    "gpu_idle_us": "us", "gpu_idle_fraction": "fraction", "n_short_kernels": "count",
    "n_graph_kernels": "count", "n_graph_launches": "count",
}


class TKLQTProfiler:
    """Profiler protocol around ``torch.profiler.profile`` (CPU + CUDA activities)."""

    name = "tklqt"

    def __init__(self, artifact_dir: str | Path, tag: str = "") -> None:
        self.artifact_dir = Path(artifact_dir)
        self.tag = tag
        self._prof: Any = None

    def available(self) -> tuple[bool, str]:
        return True, ""

    def start(self) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._prof = torch.profiler.profile(activities=activities)
        self._prof.__enter__()

    def stop(self) -> ProfileResult:
        if self._prof is None:
            return ProfileResult(self.name, unavailable="stop() called before start()")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        prof, self._prof = self._prof, None
        prof.__exit__(None, None, None)
        path = self._export(prof)
        table = kernel_table(load_trace(path))
        if not (table["kind"] == "kernel").any():
            why = "" if torch.cuda.is_available() else ": no NVIDIA GPU"
            return ProfileResult(
                self.name, artifacts=(str(path),), unavailable=f"no CUDA kernels in trace{why}"
            )
        row = summarize(table).iloc[0]
        metrics = {k: (float(row[k]), unit) for k, unit in METRIC_UNITS.items()}
        return ProfileResult(self.name, metrics=metrics, artifacts=(str(path),))

    def _export(self, prof: Any) -> Path:
        """Write the Chrome trace gzipped under ``artifact_dir``; return its path."""
        self.artifact_dir.mkdir(parents=True, exist_ok=True)
        stem = f"tklqt{'_' + self.tag if self.tag else ''}_{time.time_ns()}"
        return export_gzipped(prof, self.artifact_dir / f"{stem}.json.gz")


def export_gzipped(prof: Any, path: Path) -> Path:
    """Write a finished ``torch.profiler.profile``'s Chrome trace to ``path``, gzipped."""
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(plain))
        with open(plain, "rb") as src, gzip.open(path, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst)
    return path

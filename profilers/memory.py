"""Peak memory of a region: CUDA peak allocated bytes, or the process's peak RSS on CPU.

On CPU the peak RSS is a process-wide high-water mark (``ru_maxrss``), so it can only grow; it
is reported as-is with that caveat in the unit, not as the region's own peak.
"""

from __future__ import annotations

import resource
import sys

import torch

from effbench.profilers.base import ProfileResult


class MemoryProfiler:
    name = "memory"

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)

    def available(self) -> tuple[bool, str]:
        if self.device.type == "cuda" and not torch.cuda.is_available():
            return False, "no NVIDIA GPU"
        return True, ""

    def start(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def stop(self) -> ProfileResult:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
            return ProfileResult(self.name, {"peak_allocated": (float(peak), "B")})
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1 if sys.platform == "darwin" else 1024
        return ProfileResult(self.name, {"peak_rss_process": (float(kib * scale), "B")})

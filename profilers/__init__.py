"""Kernel-level profilers behind one protocol (see effbench.profilers.base).

This package imports nothing of adapters/ or the runner: profilers observe a region of work and
return metrics and artifacts; the runner decides what to attach. TKLQT, energy, bandwidth and
host profilers are added by the profiler work; ``memory`` is here from the start.
"""

from effbench.profilers.base import NullProfiler, Profiler, ProfileResult, collect

__all__ = ["NullProfiler", "ProfileResult", "Profiler", "collect"]

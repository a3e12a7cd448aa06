"""A fake NVML for tests that run the energy profiler on a CPU machine (NVML is the hardware
boundary here): its energy counter integrates a settable power over real time."""

from __future__ import annotations

import time


class RealtimeNVML:
    """Energy counter = the integral of ``watts`` over wall time; ``set_watts`` steps it."""

    def __init__(self, watts: float) -> None:
        self.watts, self.mj, self.t = watts, 0.0, time.perf_counter()

    def _sync(self) -> None:
        now = time.perf_counter()
        self.mj += self.watts * (now - self.t) * 1000
        self.t = now

    def set_watts(self, watts: float) -> None:
        self._sync()
        self.watts = watts

    def available(self):
        return True, ""

    def device_count(self):
        return 1

    def device_name(self, index):
        return "Fake GPU"

    def total_energy_mj(self, index):
        self._sync()
        return int(self.mj)

    def power_mw(self, index):
        return int(self.watts * 1000)

    def memory_busy_percent(self, index):
        return 0

    def shutdown(self):
        pass

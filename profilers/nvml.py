"""The few NVML calls the profilers need, behind one small class, with a null twin.

Only this module imports ``pynvml`` (from the ``nvidia-ml-py`` wheel), so the energy and
bandwidth profilers can be tested against a fake with the same methods. A counter the device
does not have (``NVMLError_NotSupported``) becomes :class:`NotSupported`, which callers catch to
fall back (energy counter -> power sampling) instead of failing the run.
"""

from __future__ import annotations

from typing import Any, Protocol


class NotSupported(RuntimeError):
    """The device has no such counter (NVML's ``NVMLError_NotSupported``)."""


class NVMLLike(Protocol):
    """What the profilers call; :class:`NVML`, :class:`NullNVML` and test fakes provide it."""

    def available(self) -> tuple[bool, str]: ...

    def device_count(self) -> int: ...

    def device_name(self, index: int) -> str: ...

    def total_energy_mj(self, index: int) -> int: ...

    def power_mw(self, index: int) -> int: ...

    def memory_busy_percent(self, index: int) -> int: ...

    def shutdown(self) -> None: ...


class NullNVML:
    """No NVIDIA driver here: unavailable with the reason, every reading raises NotSupported."""

    def __init__(self, reason: str = "no NVIDIA GPU") -> None:
        self.reason = reason

    def available(self) -> tuple[bool, str]:
        return False, self.reason

    def device_count(self) -> int:
        return 0

    def device_name(self, index: int) -> str:
        raise NotSupported(self.reason)

    def total_energy_mj(self, index: int) -> int:
        raise NotSupported(self.reason)

    def power_mw(self, index: int) -> int:
        raise NotSupported(self.reason)

    def memory_busy_percent(self, index: int) -> int:
        raise NotSupported(self.reason)

    def shutdown(self) -> None:
        pass


class NVML:
    """An initialised NVML session; build it with :func:`open_nvml`, close it with ``shutdown``.

    Device indices are NVML's (PCI order), which may differ from CUDA's when
    ``CUDA_VISIBLE_DEVICES`` reorders devices; callers pass the NVML index.
    """

    def __init__(self, pynvml: Any) -> None:
        self._nv = pynvml
        self._handles: dict[int, Any] = {}

    def _handle(self, index: int) -> Any:
        if index not in self._handles:
            self._handles[index] = self._nv.nvmlDeviceGetHandleByIndex(index)
        return self._handles[index]

    def _call(self, fn: str, index: int) -> Any:
        try:
            return getattr(self._nv, fn)(self._handle(index))
        except self._nv.NVMLError_NotSupported as e:
            raise NotSupported(f"{fn}: {e}") from e

    def available(self) -> tuple[bool, str]:
        return (True, "") if self.device_count() > 0 else (False, "NVML sees no device")

    def device_count(self) -> int:
        return int(self._nv.nvmlDeviceGetCount())

    def device_name(self, index: int) -> str:
        name = self._call("nvmlDeviceGetName", index)
        return name.decode() if isinstance(name, bytes) else str(name)

    def total_energy_mj(self, index: int) -> int:
        """Energy since the driver was loaded, in mJ (Volta and newer)."""
        return int(self._call("nvmlDeviceGetTotalEnergyConsumption", index))

    def power_mw(self, index: int) -> int:
        """Board power in mW (a ~1 s average on Ampere and newer, except GA100)."""
        return int(self._call("nvmlDeviceGetPowerUsage", index))

    def memory_busy_percent(self, index: int) -> int:
        """Percent of the last sample period device memory was read or written (a duty cycle)."""
        return int(self._call("nvmlDeviceGetUtilizationRates", index).memory)

    def shutdown(self) -> None:
        self._nv.nvmlShutdown()


def open_nvml() -> NVML | NullNVML:
    """An NVML session when a driver answers, else a NullNVML saying why."""
    try:
        import pynvml
    except ImportError as e:
        return NullNVML(f"no NVIDIA GPU (nvidia-ml-py not installed: {e})")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return NullNVML(f"no NVIDIA GPU (NVML: {e})")
    return NVML(pynvml)

"""The few NVML calls the profilers need, behind one small class, with a null twin.

Only this module imports ``pynvml`` (from the ``nvidia-ml-py`` wheel), so the energy and
bandwidth profilers can be tested against a fake with the same methods. A counter the device
does not have (``NVMLError_NotSupported``) becomes :class:`NotSupported`, which callers catch to
fall back (energy counter -> power sampling) instead of failing the run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"


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

    def index_of_uuid(self, uuid: str) -> int: ...

    def shutdown(self) -> None: ...


def nvml_index(
    torch_index: int,
    visible: str | None,
    index_of_uuid: Callable[[str], int] | None = None,
    count: int | None = None,
) -> int:
    """The NVML index of torch's ``cuda:<torch_index>`` under ``CUDA_VISIBLE_DEVICES=visible``.

    CUDA renumbers the devices it is shown: torch's index N is the N-th entry of the variable,
    while NVML ignores the variable and numbers every GPU of the machine, so a profiler reading
    NVML must translate or it measures the wrong board. An entry is a GPU index (``3``), a GPU
    UUID or a unique prefix of one (``GPU-8932f937``), or a MIG device (``MIG-<uuid>``, or the
    older ``MIG-GPU-<uuid>/<gi>/<ci>``); UUIDs go through ``index_of_uuid``
    (:meth:`NVML.index_of_uuid`; a MIG device maps to its parent GPU, whose counters cover the
    whole board). Unset (``None``), N maps to N. As in CUDA, an invalid entry (not a
    non-negative integer below ``count`` when given, nor a ``GPU-``/``MIG-`` id) hides itself
    and every entry after it.

    Raises ValueError, one line naming the variable and its value, when torch's index has no
    GPU under the variable or its entry cannot be resolved. Integer entries are taken in NVML's
    (PCI bus) order, which is CUDA's too when ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` or the GPUs are
    all alike.
    """
    if torch_index < 0:
        raise ValueError(f"cuda:{torch_index} is not a device index")
    if visible is None:
        return torch_index
    where = f"{VISIBLE_DEVICES}={visible!r}"

    def valid(entry: str) -> bool:
        if entry.isdigit():
            return count is None or int(entry) < count
        return entry.startswith(("GPU-", "MIG-"))

    shown: list[str] = []
    bad = None
    for entry in (e.strip() for e in visible.split(",")):
        if not valid(entry):
            bad = entry
            break
        shown.append(entry)
    if torch_index >= len(shown):
        why = ""
        if bad and bad.isdigit():
            why = f" ({bad!r} is not a GPU index below {count}, so it and later entries are hidden)"
        elif bad:
            why = (f" ({bad!r} is neither a GPU index nor a GPU-/MIG- UUID, so it and later"
                   " entries are hidden)")
        raise ValueError(f"{where} shows {len(shown)} GPU(s), so cuda:{torch_index} has no GPU"
                         f"{why}")
    entry = shown[torch_index]
    if entry.isdigit():
        return int(entry)
    if index_of_uuid is None:
        raise ValueError(f"{where}: cannot resolve {entry!r} to a GPU without NVML")
    try:
        return int(index_of_uuid(entry))
    except LookupError as e:  # a KeyError's str() is quoted: use its message as written
        raise ValueError(f"{where}: {e.args[0] if e.args else type(e).__name__}") from None


def visible_nvml_index(torch_index: int, nvml: NVMLLike | None = None) -> int:
    """:func:`nvml_index` under this process's ``CUDA_VISIBLE_DEVICES``, UUIDs via ``nvml``.

    With a live NVML session its device count bounds integer entries, as CUDA's does.
    """
    visible = os.environ.get(VISIBLE_DEVICES)
    if visible is None or nvml is None:
        return nvml_index(torch_index, visible)
    count = nvml.device_count() if nvml.available()[0] else None
    return nvml_index(torch_index, visible, getattr(nvml, "index_of_uuid", None), count)


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

    def process_utilization(self, index: int, since_us: int) -> list[tuple[int, int]]:
        raise NotSupported(self.reason)

    def index_of_uuid(self, uuid: str) -> int:
        raise LookupError(f"cannot look up {uuid!r}: {self.reason}")

    def shutdown(self) -> None:
        pass


class NVML:
    """An initialised NVML session; build it with :func:`open_nvml`, close it with ``shutdown``.

    Device indices are NVML's (PCI order), which may differ from CUDA's when
    ``CUDA_VISIBLE_DEVICES`` reorders devices; callers pass the NVML index
    (:func:`nvml_index` translates torch's).
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

    def process_utilization(self, index: int, since_us: int) -> list[tuple[int, int]]:
        """(pid, SM utilisation %) of every per-process sample taken after ``since_us``.

        ``since_us`` is a CPU timestamp in microseconds (``time.time() * 1e6``), NVML's
        ``lastSeenTimeStamp``; no sample since then is an empty list (NVML's NotFound). The
        pids are those of the host's pid namespace. Used by effbench.profilers.interference
        to see what other processes did on the GPU during a case.
        """
        try:
            samples = self._nv.nvmlDeviceGetProcessUtilization(self._handle(index),
                                                               int(since_us))
        except self._nv.NVMLError_NotSupported as e:
            raise NotSupported(f"nvmlDeviceGetProcessUtilization: {e}") from e
        except self._nv.NVMLError_NotFound:
            return []
        return [(int(s.pid), int(s.smUtil)) for s in samples]

    def device_uuid(self, index: int) -> str:
        uuid = self._call("nvmlDeviceGetUUID", index)
        return uuid.decode() if isinstance(uuid, bytes) else str(uuid)

    def index_of_uuid(self, uuid: str) -> int:
        """NVML index of the GPU a ``CUDA_VISIBLE_DEVICES`` UUID entry names.

        ``GPU-...``: the GPU whose UUID is it or starts with it (CUDA accepts unique prefixes).
        ``MIG-...``: the GPU the MIG device is a slice of. LookupError when none (or, for a
        prefix, more than one) matches.
        """
        if uuid.startswith("MIG-GPU-"):  # pre-R470 form MIG-GPU-<uuid>/<gi>/<ci>
            uuid = uuid[len("MIG-"):].split("/")[0]
        elif uuid.startswith("MIG-"):
            try:
                mig = self._nv.nvmlDeviceGetHandleByUUID(uuid)
                parent = self._nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
                return int(self._nv.nvmlDeviceGetIndex(parent))
            except self._nv.NVMLError as e:
                raise LookupError(f"no MIG device {uuid!r} (NVML: {e})") from None
        found = [i for i in range(self.device_count()) if self.device_uuid(i).startswith(uuid)]
        if len(found) != 1:
            what = "no GPU" if not found else f"{len(found)} GPUs ({found})"
            raise LookupError(f"{what} with UUID {uuid!r} among {self.device_count()}")
        return found[0]

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

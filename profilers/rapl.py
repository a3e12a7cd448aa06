"""CPU package and DRAM energy counters from Linux powercap (RAPL) sysfs, with a null twin.

Each zone (``intel-rapl:N`` a package, ``intel-rapl:N:M`` one of its subzones such as ``dram``)
has ``name``, ``energy_uj`` (a microjoule counter that wraps at ``max_energy_range_uj``) and
``max_energy_range_uj``. The root is a parameter so tests can build a real tree in a temp dir.
Deltas allow at most one wrap between two readings (a package wraps after ~hours at typical
power, far longer than a measured window).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/sys/class/powercap")
_ZONE = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class RaplZone:
    """One counter: ``key`` like ``package-0`` or ``package-0/dram``; where it is; its range."""

    key: str
    path: Path
    max_range_uj: int


def delta_uj(begin: int, end: int, max_range_uj: int) -> int:
    """Counter difference ``end - begin`` allowing one wrap at ``max_range_uj``."""
    return end - begin if end >= begin else end + max_range_uj - begin


class NullRAPL:
    """No RAPL here: unavailable with the reason, no zones."""

    def __init__(self, reason: str = "RAPL not exposed by this kernel") -> None:
        self.reason = reason

    def available(self) -> tuple[bool, str]:
        return False, self.reason

    def zones(self) -> tuple[RaplZone, ...]:
        return ()

    def read_uj(self) -> dict[str, int]:
        return {}

    def delta_j(self, begin: dict[str, int], end: dict[str, int]) -> dict[str, float]:
        return {}


class RAPL:
    """Reads every package zone and subzone under ``root`` (default ``/sys/class/powercap``)."""

    def __init__(self, root: Path | str = DEFAULT_ROOT) -> None:
        self.root = Path(root)
        self._zones: tuple[RaplZone, ...] | None = None

    def _scan(self) -> tuple[RaplZone, ...]:
        if not self.root.is_dir():
            return ()
        found = {}
        for d in self.root.iterdir():
            m = _ZONE.match(d.name)
            if m:
                found[(int(m.group(1)), int(m.group(2) or -1))] = d
        packages: dict[int, str] = {}
        zones = []
        for (pkg, sub), d in sorted(found.items()):
            name = _read(d / "name") or d.name
            if sub == -1:
                packages[pkg] = name
                key = name
            else:
                key = f"{packages.get(pkg, f'package-{pkg}')}/{name}"
            rng = _read(d / "max_energy_range_uj")
            zones.append(RaplZone(key, d, int(rng) if rng and rng.isdigit() else 0))
        return tuple(zones)

    def zones(self) -> tuple[RaplZone, ...]:
        if self._zones is None:
            self._zones = self._scan()
        return self._zones

    def available(self) -> tuple[bool, str]:
        """True when every zone's ``energy_uj`` reads; else exactly what stops it."""
        zones = self.zones()
        if not zones:
            return False, f"RAPL not exposed by this kernel (no intel-rapl zones in {self.root})"
        for z in zones:
            f = z.path / "energy_uj"
            try:
                int(f.read_text().strip())
            except PermissionError:
                return False, f"permission denied reading energy_uj ({f})"
            except FileNotFoundError:
                return False, f"energy_uj missing ({f})"
            except (OSError, ValueError) as e:
                return False, f"cannot read energy_uj ({f}: {e})"
        return True, ""

    def read_uj(self) -> dict[str, int]:
        """The current counter of every zone, in microjoules."""
        return {z.key: int((z.path / "energy_uj").read_text()) for z in self.zones()}

    def delta_j(self, begin: dict[str, int], end: dict[str, int]) -> dict[str, float]:
        """Joules per zone between two ``read_uj`` readings, wrap-around included."""
        return {
            z.key: delta_uj(begin[z.key], end[z.key], z.max_range_uj) / 1e6
            for z in self.zones()
            if z.key in begin and z.key in end
        }


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def open_rapl(root: Path | str = DEFAULT_ROOT) -> RAPL | NullRAPL:
    """A RAPL reader when its counters can be read here, else a NullRAPL saying why."""
    rapl = RAPL(root)
    ok, reason = rapl.available()
    return rapl if ok else NullRAPL(reason)

"""The ``Record``: one measured metric of one case, with its raw samples and statistics.

Records are the only thing the store, the report, the gate and the dashboard exchange. They
serialise to one JSON object per line in the run journal and to one row in the run's Parquet
file (``params``, ``samples`` and ``stats`` as JSON text there, so any tool can read them).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = 1
DIRECTIONS = ("lower", "higher")
STATUSES = ("ok", "failed", "skipped")


@dataclass(frozen=True)
class Record:
    run_id: str
    case_id: str
    technique: str
    family: str
    level: str
    params: dict[str, Any]
    workload: str
    device: str
    metric: str
    value: float
    unit: str
    direction: str
    samples: tuple[float, ...] = ()
    stats: dict[str, float] = field(default_factory=dict)
    status: str = "ok"
    error: str = ""
    created_ns: int = 0
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples"] = list(self.samples)
        d["value"] = _finite_or_none(self.value)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        d = dict(d)
        d["samples"] = tuple(d.get("samples") or ())
        for key in ("params", "stats"):
            if isinstance(d.get(key), str):
                d[key] = json.loads(d[key])
        if d.get("value") is None:
            d["value"] = math.nan
        return cls(**d)


def _finite_or_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x

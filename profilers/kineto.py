"""Parse PyTorch profiler (Kineto) Chrome traces into launch, GPU-activity and step tables.

Only what the launch/queue analysis needs is kept: CPU launch calls (``cuda_runtime`` and
``cuda_driver``), GPU activity (``kernel``, ``gpu_memcpy``, ``gpu_memset``) and
``ProfilerStep#N`` annotations. Times become int64 nanoseconds so that sub-microsecond digits
survive: a recent trace writes epoch microseconds with three decimals (19 significant digits),
which float64 cannot hold, so such files are parsed with their floats kept as text and converted
by string arithmetic. Events missing a needed field are skipped and counted, never fatal.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:  # optional speed-up; the stdlib parser gives the same result
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

LAUNCH_CATS = ("cuda_runtime", "cuda_driver")
GPU_CATS = ("kernel", "gpu_memcpy", "gpu_memset")
# Launch calls (runtime and driver API, with optional version suffixes such as ``_v7000``).
LAUNCH_NAME = re.compile(
    r"^(cuda|cu)(LaunchKernel|LaunchCooperativeKernel|GraphLaunch|Memcpy|Memset)"
)
GRAPH_LAUNCH_NAME = re.compile(r"^(cuda|cu)GraphLaunch")
STEP_NAME = re.compile(r"^ProfilerStep#(\d+)$")
# A float timestamp with >= 13 integer digits cannot keep nanoseconds in float64 microseconds.
_IMPRECISE_FLOAT = re.compile(rb'"(?:ts|dur)"\s*:\s*-?\d{13,}\.\d')

LAUNCH_COLUMNS = ("correlation", "name", "cat", "ts_ns", "dur_ns", "pid", "tid")
GPU_COLUMNS = ("correlation", "name", "cat", "ts_ns", "dur_ns", "device", "stream", "graph_id")
STEP_COLUMNS = ("step", "ts_ns", "end_ns")


@dataclass(frozen=True)
class KinetoTrace:
    """The parts of one Kineto trace used for launch/queue analysis (times in int64 ns).

    ``launches``: one row per CPU launch call; ``gpu``: one row per GPU activity;
    ``steps``: one row per ``ProfilerStep#N``; ``skipped``: relevant events dropped because
    a needed field was missing or malformed.
    """

    launches: pd.DataFrame
    gpu: pd.DataFrame
    steps: pd.DataFrame
    skipped: int = 0


def _time_to_ns(values: list[Any]) -> np.ndarray:
    """Microsecond values (int, float or decimal text) -> int64 ns; NaN-free input assumed.

    Text is split at the decimal point and the fraction padded/truncated to three digits, so a
    19-digit epoch timestamp keeps its nanoseconds exactly.
    """
    s = pd.Series(values, dtype=object)
    out = np.zeros(len(s), dtype=np.int64)
    is_str = s.map(type).eq(str).to_numpy()
    if (~is_str).any():
        num = pd.to_numeric(s[~is_str]).to_numpy()
        if num.dtype.kind in "iu":
            out[~is_str] = num.astype(np.int64) * 1000
        else:
            num = num.astype(np.float64)
            whole = np.floor(num)  # exact: split before scaling so large values keep their ns
            frac_ns = np.round((num - whole) * 1000.0).astype(np.int64)
            out[~is_str] = whole.astype(np.int64) * 1000 + frac_ns
    if is_str.any():
        txt = s[is_str].astype(str).str.strip()
        neg = txt.str.startswith("-").to_numpy()
        parts = txt.str.lstrip("+-").str.partition(".")
        whole = parts[0].replace("", "0").astype(np.int64).to_numpy()
        frac = parts[2].str.slice(0, 3).str.ljust(3, "0").astype(np.int64).to_numpy()
        ns = whole * 1000 + frac
        out[is_str] = np.where(neg, -ns, ns)
    return out


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as f:
        return f.read()


def _loads(raw: bytes) -> Any:
    """Parse JSON; floats are kept as text where float64 would lose nanoseconds."""
    if _IMPRECISE_FLOAT.search(raw):
        return json.loads(raw, parse_float=str)
    if _orjson is not None:
        return _orjson.loads(raw)
    return json.loads(raw)


def _valid_time(v: Any) -> bool:
    return isinstance(v, (int, float, str)) and not isinstance(v, bool)


def _frame(rows: list[tuple], columns: tuple[str, ...]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=list(columns))
    return df


def parse_events(events: list[dict[str, Any]]) -> KinetoTrace:
    """Build the launch, GPU and step tables from a ``traceEvents`` list.

    Launch calls are ``cuda_runtime``/``cuda_driver`` complete events whose name is a kernel,
    graph, memcpy or memset launch; GPU activities are ``kernel``/``gpu_memcpy``/``gpu_memset``
    complete events. Each needs ``ts``, ``dur`` and an integer ``args.correlation``; GPU rows
    also take ``args.device``/``args.stream`` (falling back to ``pid``/``tid``) and
    ``args["graph id"]`` when present. Anything else missing -> skipped and counted.
    """
    launch_ev = []
    gpu_ev = []
    step_ev = []
    for e in events:
        if not isinstance(e, dict):
            continue
        cat = e.get("cat")
        if cat in GPU_CATS:
            gpu_ev.append(e)
        elif cat in LAUNCH_CATS:
            launch_ev.append(e)
        elif cat == "user_annotation":
            step_ev.append(e)
    skipped = 0

    def ok(e: dict[str, Any]) -> bool:
        args = e.get("args")
        return (
            e.get("ph", "X") == "X"
            and _valid_time(e.get("ts"))
            and _valid_time(e.get("dur"))
            and isinstance(args, dict)
            and isinstance(args.get("correlation"), int)
        )

    launch_ev = [e for e in launch_ev if LAUNCH_NAME.match(str(e.get("name", "")))]
    good_l = [e for e in launch_ev if ok(e)]
    good_g = [e for e in gpu_ev if ok(e)]
    skipped += len(launch_ev) - len(good_l) + len(gpu_ev) - len(good_g)

    launches = _frame(
        [(e["args"]["correlation"], str(e.get("name", "")), e["cat"], e["ts"], e["dur"],
          e.get("pid", -1), e.get("tid", -1)) for e in good_l],
        LAUNCH_COLUMNS,
    )
    gpu = _frame(
        [(e["args"]["correlation"], str(e.get("name", "")), e["cat"], e["ts"], e["dur"],
          e["args"].get("device", e.get("pid", -1)), e["args"].get("stream", e.get("tid", -1)),
          e["args"].get("graph id", -1)) for e in good_g],
        GPU_COLUMNS,
    )
    for df in (launches, gpu):
        df["ts_ns"] = _time_to_ns(df["ts_ns"].tolist())
        df["dur_ns"] = _time_to_ns(df["dur_ns"].tolist())
        df["correlation"] = df["correlation"].astype(np.int64)
    for col in ("device", "stream", "graph_id"):
        gpu[col] = pd.to_numeric(gpu[col], errors="coerce").fillna(-1).astype(np.int64)

    step_rows = []
    for e in step_ev:
        m = STEP_NAME.match(str(e.get("name", "")))
        if m is None:
            continue
        if not (_valid_time(e.get("ts")) and _valid_time(e.get("dur"))):
            skipped += 1
            continue
        step_rows.append((int(m.group(1)), e["ts"], e["dur"]))
    steps = _frame(step_rows, STEP_COLUMNS)
    steps["ts_ns"] = _time_to_ns(steps["ts_ns"].tolist())
    steps["end_ns"] = steps["ts_ns"] + _time_to_ns(steps["end_ns"].tolist())
    steps["step"] = steps["step"].astype(np.int64)
    steps = steps.sort_values("ts_ns", kind="stable").reset_index(drop=True)
    return KinetoTrace(launches, gpu, steps, skipped)


def load_trace(path: str | Path) -> KinetoTrace:
    """Read a Kineto Chrome trace (``.json`` or gzipped) and parse it with ``parse_events``.

    Raises ValueError (one line) when the file is missing, not JSON, or has no ``traceEvents``.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"trace file not found: {p}")
    try:
        doc = _loads(_read_bytes(p))
    except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f"not a JSON trace: {p} ({type(exc).__name__})") from None
    events = doc.get("traceEvents") if isinstance(doc, dict) else doc
    if not isinstance(events, list):
        raise ValueError(f"not a Chrome trace (no traceEvents list): {p}")
    return parse_events(events)

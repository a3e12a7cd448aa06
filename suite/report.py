"""Summary tables of a run's records, for people: one table per family, values with units.

``summary_table`` is pure (records frame in, frames out) so the CLI, the dashboard and tests
share it; ``render_text`` only lays the tables out for a terminal. Each cell reads like
``12.3 ms ±4.1%``: the median, auto-scaled with its unit, and the relative half-width of its
confidence interval, so a reader sees both the number and how much to trust it. Columns come
in the order the metrics' producers declared them (effbench.suite.metrics); each cell is
scaled by the unit its record carries (the unit the value was measured in).
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

import pandas as pd

from effbench.suite import metrics
from effbench.suite.family import family_index
from effbench.suite.technique import LEVELS

KEY_COLUMNS = ("level", "workload", "technique", "params")
ERROR_COLUMN = "error"
NOISY_MARK = "~"
"""Suffix of the timing cells of a case measured under interference (stats ``noisy``)."""
NOISY_FOOTER = (
    f"{NOISY_MARK} measured under interference: other processes used the run's CPUs (or GPU) "
    "while the case was timed; its interference.* records say how much. `effbench run "
    "--retry-noisy N` re-measures such cases."
)
CONTEXT_PREFIX = "interference."
"""Records that describe the machine while a case ran, not the case: shown as the mark only."""
_ERROR_CHARS = 80
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_TIME_SCALES = (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9))
_BYTE_UNITS = {"B": 1, "bytes": 1, "byte": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_BYTE_SCALES = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


# ---------------------------------------------------------------------------------------------
# Numbers


def _is_missing(x: Any) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def sig(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, without exponents for everyday magnitudes.

    Numbers of ``10**digits`` and more keep all integer digits with thousands separators.
    """
    if _is_missing(x):
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    x = float(f"{x:.{digits}g}")
    if abs(x) >= 10**digits:
        return f"{x:,.0f}"
    if abs(x) < 1e-3:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def format_value(value: float, unit: str) -> str:
    """Format a measured value with its unit, scaled for reading.

    Seconds scale across ns/us/ms/s, bytes across B/KiB/MiB/GiB, throughputs (``.../s``) above a
    million get an ``M``; ``x`` and ``%`` attach to the number; other units follow it.
    """
    if _is_missing(value) or math.isinf(value):
        return sig(value)
    unit = unit or ""
    if unit in _TIME_UNITS:
        seconds = float(f"{value * _TIME_UNITS[unit]:.3g}")
        for name, scale in _TIME_SCALES:
            if abs(seconds) >= scale or name == "ns":
                return f"{sig(seconds / scale)} {name}"
    if unit in _BYTE_UNITS:
        scaled, i = float(value) * _BYTE_UNITS[unit], 0
        while i < len(_BYTE_SCALES) - 1 and abs(float(f"{scaled:.3g}")) >= 1024:
            scaled, i = scaled / 1024, i + 1
        text = f"{scaled:,.0f}" if i == 0 else sig(scaled)
        return f"{text} {_BYTE_SCALES[i]}"
    if unit.endswith("/s") and abs(value) >= 1e6:
        return f"{sig(value / 1e6)}M {unit}"
    if unit in ("x", "%"):
        return f"{sig(value)}{unit}"
    if unit in ("", "1", "count"):
        return sig(value)
    return f"{sig(value)} {unit}"


def format_rel_ci(rel_ci: float | None) -> str:
    """``±4.1%`` for a relative CI half-width of 0.041; empty when unknown."""
    if _is_missing(rel_ci) or math.isinf(rel_ci):
        return ""
    pct = abs(rel_ci) * 100
    return f"±{pct:.1f}%" if pct < 10 else f"±{pct:.0f}%"


def format_cell(center: float, unit: str, rel_ci: float | None = None) -> str:
    """``12.3 ms ±4.1%``: value with unit and, when known, its relative CI."""
    ci = format_rel_ci(rel_ci)
    return f"{format_value(center, unit)} {ci}" if ci else format_value(center, unit)


# ---------------------------------------------------------------------------------------------
# Tables


def _as_dict(x: Any) -> dict[str, Any]:
    if isinstance(x, dict):
        return x
    if isinstance(x, str) and x:
        try:
            loaded = json.loads(x)
        except ValueError:
            return {}
        return loaded if isinstance(loaded, dict) else {}
    return {}


def params_label(params: Any) -> str:
    """``window=64, causal=True`` from a params dict or its JSON text; ``-`` when empty."""
    d = _as_dict(params)
    return ", ".join(f"{k}={d[k]}" for k in sorted(d)) if d else "-"


def _number(x: Any) -> float | None:
    if _is_missing(x) or isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x)


def _center_and_ci(row: dict[str, Any]) -> tuple[float, float | None]:
    """Median (else value) and relative CI half-width, from flat columns or the stats JSON."""
    stats = _as_dict(row.get("stats"))

    def pick(key: str) -> float | None:
        flat = _number(row.get(key))
        return flat if flat is not None else _number(stats.get(key))

    center = pick("median")
    if center is None:
        center = _number(row.get("value"))
    rel = pick("rel_ci")
    lo, hi = pick("ci_low"), pick("ci_high")
    if rel is None and lo is not None and hi is not None and center:
        rel = (hi - lo) / 2 / abs(center)
    return (math.nan if center is None else center), rel


ABOVE_PEAK = "!>100%"
"""Shown instead of a percentage of peak above 100 (stats ``above_peak``): a measurement
problem (the peak, or the analytic count), never a result."""


def _cell(row: dict[str, Any]) -> str:
    if _number(_as_dict(row.get("stats")).get("above_peak")):
        return ABOVE_PEAK
    center, rel = _center_and_ci(row)
    text = format_cell(center, str(row.get("unit") or ""), rel)
    if is_noisy(row) and metrics.kind_of(str(row.get("metric") or "")) == "timing":
        text += NOISY_MARK
    return text


def is_noisy(row: dict[str, Any]) -> bool:
    """Whether a record (row) belongs to a case measured under interference (stats ``noisy``)."""
    flag = _as_dict(row.get("stats")).get("noisy")
    return flag is True or bool(_number(flag))


def _unit_rank(unit: str) -> int:
    if unit in _TIME_UNITS:
        return 0
    if unit.endswith("/s"):
        return 1
    if unit == "x":
        return 2
    if unit in _BYTE_UNITS:
        return 3
    if unit == "%":
        return 4
    return 5


def metric_order(df: pd.DataFrame) -> list[str]:
    """Metrics ordered for reading, from their declarations (effbench.suite.metrics).

    Declared metrics first: measured ones (``timing``), then exact ones (``count``), then
    deterministic results such as quality and errors (``numeric``), each group in the order
    its producer declared them. Metrics nothing declares (another tool's records, an older
    effbench) follow, grouped by unit: times, throughputs, ratios, memory, percentages, others.
    """
    units = df.groupby("metric", sort=False)["unit"].first()

    def key(m: str) -> tuple:
        s = metrics.spec(str(m))
        if s is not None:
            return (0, metrics.KINDS.index(s.kind), metrics.position(str(m)), "")
        return (1, _unit_rank(str(units[m] or "")), 0, str(m))

    return sorted(units.index, key=key)


def _error_text(status: str, error: Any) -> str:
    lines = str(error or "").strip().splitlines()
    first = lines[0] if lines else ""
    if len(first) > _ERROR_CHARS:
        first = first[: _ERROR_CHARS - 1] + "…"
    return f"{status}: {first}" if first else status


def _rank(values: pd.Series, order: tuple[str, ...]) -> pd.Series:
    known = {v: i for i, v in enumerate(order)}
    return values.map(lambda v: known.get(v, len(order)))


def _family_table(fam: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    ok = fam[fam["status"] == "ok"]
    cells = pd.DataFrame(index=pd.MultiIndex.from_arrays([[]] * len(keys), names=keys))
    if not ok.empty:
        texts = [_cell(r) for r in _rows(ok)]
        cells = (
            ok.assign(_cell=texts)
            .groupby([*keys, "metric"], sort=False)["_cell"]
            .last()
            .unstack("metric")
        )
        cells = cells[metric_order(ok)]
    bad = fam[fam["status"] != "ok"]
    errors = pd.Series(dtype=object)
    if not bad.empty:
        errors = pd.Series(
            [_error_text(r["status"], r.get("error")) for r in _rows(bad)],
            index=pd.MultiIndex.from_frame(bad[keys]),
        )
        errors = errors.groupby(level=list(range(len(keys))), sort=False).agg("; ".join)
    index = cells.index.append(errors.index).unique() if not errors.empty else cells.index
    table = cells.reindex(index)
    if not errors.empty:
        table[ERROR_COLUMN] = errors.reindex(index)
    table = table.astype(object).where(table.notna(), "").reset_index()
    table.columns.name = None
    table = table.assign(_lv=_rank(table["level"], LEVELS)).sort_values(
        ["_lv", "workload", "technique", "params", *(["run"] if "run" in keys else [])],
        kind="stable",
    )
    return table.drop(columns="_lv").reset_index(drop=True)


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    return df.to_dict("records")


def summary_table(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One table per family and level from a records frame (``store.load_records``).

    Keys are ``"family / level"`` in family then level order: metrics differ by level, so
    splitting keeps each table narrow enough to read.

    Rows are (level, workload, technique, params), plus ``run`` first when the frame holds more
    than one run; columns are the metrics, each cell a formatted median with its relative CI.
    Failed or skipped cases get an ``error`` column with their first error line. The timing
    cells of a case measured under interference end in ``NOISY_MARK`` (``12.3 ms ±4.1%~``);
    its ``interference.*`` records themselves are left out (they describe the machine, and
    ``render_text`` explains the mark in a footer line).
    """
    if df.empty:
        return {}
    frame = df[~df["metric"].astype(str).str.startswith(CONTEXT_PREFIX)].copy()
    if frame.empty:
        return {}
    if "created_ns" in frame:
        frame = frame.sort_values("created_ns", kind="stable")
    frame["params"] = frame["params"].map(params_label)
    for col in ("level", "workload", "technique", "metric", "unit", "family", "status"):
        frame[col] = frame[col].astype(object).where(frame[col].notna(), "")
    keys = list(KEY_COLUMNS)
    if "run_id" in frame and frame["run_id"].nunique() > 1:
        frame["run"] = frame["run_id"]
        keys = ["run", *keys]
    families = sorted(
        frame["family"].unique(),
        key=lambda f: (family_index(f), f),
    )
    out: dict[str, pd.DataFrame] = {}
    for f in families:
        fam = frame[frame["family"] == f]
        for level in sorted(fam["level"].unique(), key=lambda lv: _rank(pd.Series([lv]),
                                                                         LEVELS).iloc[0]):
            table = _family_table(fam[fam["level"] == level], keys)
            out[f"{f} / {level}"] = table.drop(columns="level")
    return out


# ---------------------------------------------------------------------------------------------
# Terminal


def _rich_available() -> bool:
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def render_text(
    tables: dict[str, pd.DataFrame], width: int = 100, plain: bool | None = None
) -> str:
    """Lay the family tables out as text ``width`` columns wide.

    Uses ``rich`` (no colour codes) when installed unless ``plain`` is true; the plain layout is
    pandas' own aligned ``to_string``.
    """
    if not tables:
        return "no records\n"
    if plain is None:
        plain = not _rich_available()
    text = _render_plain(tables, width) if plain else _render_rich(tables, width)
    if any(str(v).endswith(NOISY_MARK) for t in tables.values() for v in t.to_numpy().ravel()):
        text += f"\n{NOISY_FOOTER}\n"
    return text


def _is_key(column: str) -> bool:
    return column in KEY_COLUMNS or column in ("run", ERROR_COLUMN)


def _render_plain(tables: dict[str, pd.DataFrame], width: int) -> str:
    parts = []
    for family, table in tables.items():
        body = table.to_string(index=False, line_width=width, justify="left")
        parts.append(f"{family}\n{'=' * len(family)}\n{body}\n")
    return "\n".join(parts)


def _column_chunks(table: pd.DataFrame, width: int) -> list[list[str]]:
    """Split metric columns into groups that fit ``width`` beside the key columns.

    Wide tables are printed as several narrower ones (the key columns repeated) rather than
    squeezed: a folded technique name or a cut number is unreadable.
    """
    def natural(col: str) -> int:
        cells = [len(str(v)) for v in table[col]] + [len(str(col))]
        return max(cells) + 2

    keys = [c for c in table.columns if _is_key(c) and c != ERROR_COLUMN]
    rest = [c for c in table.columns if c not in keys]
    budget = width - sum(natural(c) for c in keys)
    chunks: list[list[str]] = [[]]
    used = 0
    for col in rest:
        w = natural(col)
        if chunks[-1] and used + w > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(col)
        used += w
    return [keys + c for c in chunks]


def _render_rich(tables: dict[str, pd.DataFrame], width: int) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False)
    for family, full in tables.items():
        for i, cols in enumerate(_column_chunks(full, width)):
            table = full[cols]
            title = family if i == 0 else f"{family} (continued)"
            t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
            for col in table.columns:
                if _is_key(col):
                    t.add_column(str(col), justify="left", overflow="fold")
                else:  # a wrapped number is unreadable: let key and error columns give way
                    t.add_column(str(col), justify="right", no_wrap=True, overflow="ellipsis")
            for row in table.itertuples(index=False):
                t.add_row(*(str(v) for v in row))
            console.print(t)
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"

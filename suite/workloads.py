"""Synthetic serving workloads: request arrival times and prompt/output lengths.

Arrival processes (all return sorted float64 arrays of ``n`` arrival times in seconds):

* ``poisson`` - exponential inter-arrival gaps with mean ``1 / rate`` (memoryless traffic).
* ``gamma`` - gamma-distributed gaps with mean ``1 / rate`` and coefficient of variation
  ``cv``: ``cv > 1`` is burstier than Poisson, ``cv < 1`` smoother, ``cv == 1`` is Poisson.
* ``constant`` - evenly spaced, one request every ``1 / rate`` seconds.

Convention: the first request arrives at ``t = 0`` and the ``n - 1`` gaps follow, so a run's
duration starts with its first request (matching ``serving_metrics.duration``) and the
empirical rate is ``(n - 1) / arrivals[-1]``. ``rate = inf`` sends every request at ``t = 0``
(a closed burst). Everything is reproducible from ``seed`` via ``numpy.random.default_rng``.

Length samplers return int64 arrays of token counts (``LengthSpec`` names one declaratively):

* ``fixed`` - every length is ``value``.
* ``uniform`` - uniform over the inclusive range ``[low, high]``.
* ``lognormal`` - lognormal given its ``median`` and log-space ``sigma``, rounded and clipped to
  ``[low, high]`` (real prompt and output lengths are right-skewed like this).
* ``zipf`` - a bounded Zipf law over ``[low, high]``: length ``k`` has probability proportional
  to ``(k - low + 1) ** -a``, so ``low`` is the most frequent length, ``low + 1`` is ``2 ** a``
  times rarer, and so on (rank-frequency: rank ``r = k - low + 1``). Any ``a > 0`` is a proper
  distribution since the support is finite (``a <= 1`` included).
* ``empirical`` - a histogram the user gives: a CSV file with the header ``length,count`` (or
  ``length,weight``) and one ``<length>,<count>`` row per length (``#`` starts a comment);
  lengths are drawn with probability proportional to their count. ``read_length_histogram``
  parses it and refuses a malformed file with one line ``<path>:<line>: <what is wrong>``.

``zipf`` and ``empirical`` are sampled by inverse CDF over their finite support: one uniform
draw per length from ``numpy.random.default_rng(seed)``, looked up in the cumulative weights.
Every sampler is reproducible from its ``seed``; the serving level records the seeds it used
(effbench.suite.levels.serving).
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ARRIVAL_KINDS = ("poisson", "gamma", "constant")
LENGTH_KINDS = ("fixed", "uniform", "lognormal", "zipf", "empirical")
LENGTH_PARAMS: dict[str, tuple[str, ...]] = {
    "fixed": ("value",),
    "uniform": ("low", "high"),
    "lognormal": ("median", "sigma", "low", "high"),
    "zipf": ("a", "low", "high"),
    "empirical": ("file",),
}
"""The parameters each length kind takes (a preset's ``{ kind = ..., <these> }`` keys)."""
LENGTH_REQUIRED: dict[str, tuple[str, ...]] = {
    "fixed": ("value",),
    "uniform": ("low", "high"),
    "lognormal": ("median", "sigma"),
    "zipf": ("a", "high"),
    "empirical": ("file",),
}
"""The parameters a kind cannot do without (``low`` defaults to 1, ``high`` of ``lognormal``
to ``2**20``)."""
HISTOGRAM_HEADERS = ("count", "weight")
"""Accepted second columns of an empirical histogram's header (``length,<one of these>``)."""


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


def _check_rate_n(rate: float, n: int) -> None:
    if not float(rate) > 0:  # also rejects NaN
        raise ValueError(f"rate must be > 0 (inf allowed for a burst), got {rate!r}")
    _check_n(n)


def _from_gaps(gaps: np.ndarray) -> np.ndarray:
    """Turn ``n - 1`` gaps into ``n`` arrival times starting at 0."""
    return np.concatenate(([0.0], np.cumsum(gaps)))


def poisson_arrivals(rate_per_s: float, n: int, seed: int = 0) -> np.ndarray:
    """Return ``n`` Poisson-process arrival times: first at 0, then exponential gaps."""
    _check_rate_n(rate_per_s, n)
    if n == 0:
        return np.empty(0)
    if math.isinf(rate_per_s):
        return np.zeros(n)
    rng = np.random.default_rng(seed)
    return _from_gaps(rng.exponential(1.0 / rate_per_s, size=n - 1))


def gamma_arrivals(rate: float, cv: float, n: int, seed: int = 0) -> np.ndarray:
    """Return ``n`` arrival times with gamma gaps: mean ``1/rate``, coefficient of variation ``cv``.

    Shape ``k = 1 / cv**2`` and scale ``cv**2 / rate`` give mean ``1/rate`` and std
    ``cv / rate``; ``cv = 1`` is the exponential distribution, i.e. a Poisson process.
    """
    _check_rate_n(rate, n)
    if not (cv > 0 and math.isfinite(cv)):
        raise ValueError(f"cv must be a finite number > 0, got {cv!r}")
    if n == 0:
        return np.empty(0)
    if math.isinf(rate):
        return np.zeros(n)
    rng = np.random.default_rng(seed)
    shape = 1.0 / cv**2
    return _from_gaps(rng.gamma(shape, 1.0 / (shape * rate), size=n - 1))


def constant_arrivals(rate: float, n: int) -> np.ndarray:
    """Return ``n`` evenly spaced arrival times ``0, 1/rate, 2/rate, ...``."""
    _check_rate_n(rate, n)
    if math.isinf(rate):
        return np.zeros(n)
    return np.arange(n, dtype=float) / rate


@dataclass(frozen=True)
class ArrivalSpec:
    """Declarative arrival process, validated on construction; ``arrivals()`` samples it.

    ``cv`` only applies to ``kind="gamma"``; the other kinds require the default ``1.0`` so a
    burstiness setting is never silently ignored. ``seed`` is unused by ``constant``.
    """

    kind: str
    rate: float
    n: int
    cv: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ARRIVAL_KINDS:
            raise ValueError(
                f"unknown arrival kind {self.kind!r}; valid kinds: {', '.join(ARRIVAL_KINDS)}"
            )
        _check_rate_n(self.rate, self.n)
        if not (self.cv > 0 and math.isfinite(self.cv)):
            raise ValueError(f"cv must be a finite number > 0, got {self.cv!r}")
        if self.kind != "gamma" and self.cv != 1.0:
            raise ValueError(f"cv only applies to kind 'gamma', got cv={self.cv} for {self.kind!r}")

    def arrivals(self) -> np.ndarray:
        """Sample the arrival times this spec describes."""
        if self.kind == "poisson":
            return poisson_arrivals(self.rate, self.n, self.seed)
        if self.kind == "gamma":
            return gamma_arrivals(self.rate, self.cv, self.n, self.seed)
        return constant_arrivals(self.rate, self.n)


def _check_range(low: int, high: int) -> None:
    if low < 1 or high < low:
        raise ValueError(f"need 1 <= low <= high for token lengths, got low={low}, high={high}")


def fixed_lengths(value: int, n: int) -> np.ndarray:
    """Return ``n`` copies of ``value`` tokens."""
    _check_n(n)
    if value < 1:
        raise ValueError(f"length must be >= 1 token, got {value}")
    return np.full(n, int(value), dtype=np.int64)


def uniform_lengths(low: int, high: int, n: int, seed: int = 0) -> np.ndarray:
    """Return ``n`` lengths drawn uniformly from the inclusive range ``[low, high]``."""
    _check_n(n)
    _check_range(low, high)
    return np.random.default_rng(seed).integers(low, high, size=n, endpoint=True, dtype=np.int64)


def lognormal_lengths(
    median: float, sigma: float, n: int, seed: int = 0, low: int = 1, high: int = 1 << 20
) -> np.ndarray:
    """Return ``n`` lognormal lengths, rounded and clipped to ``[low, high]``.

    ``median`` is the distribution's median (``exp(mu)``) and ``sigma`` the std of the log;
    real prompt/output lengths are right-skewed like this. Clipping keeps them within the
    model's context and above zero; it moves mass to the bounds rather than re-drawing.
    """
    _check_n(n)
    _check_range(low, high)
    if not (median > 0 and sigma >= 0):
        raise ValueError(f"need median > 0 and sigma >= 0, got median={median}, sigma={sigma}")
    draws = np.random.default_rng(seed).lognormal(math.log(median), sigma, size=n)
    return np.clip(np.rint(draws), low, high).astype(np.int64)


def _inverse_cdf(values: np.ndarray, weights: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` draws of ``values`` with probability proportional to ``weights`` (all >= 0, sum >
    0), by inverse CDF: one ``default_rng(seed).random()`` per draw, found in the cumulative
    weights. Values of zero weight are never drawn.
    """
    cdf = np.cumsum(weights, dtype=np.float64)
    cdf /= cdf[-1]
    u = np.random.default_rng(seed).random(n)
    idx = np.searchsorted(cdf, u, side="right")  # first index with cdf > u: weight 0 skipped
    return values[np.minimum(idx, len(values) - 1)].astype(np.int64)


def _check_zipf(a: float) -> None:
    if not (isinstance(a, (int, float)) and math.isfinite(a) and a > 0):
        raise ValueError(f"need a finite exponent a > 0 for zipf, got a={a!r}")


def zipf_lengths(a: float, low: int, high: int, n: int, seed: int = 0) -> np.ndarray:
    """Return ``n`` lengths of a Zipf law bounded to ``[low, high]``.

    Length ``k`` has probability proportional to ``(k - low + 1) ** -a``: ``low`` is the most
    frequent, and each length's frequency falls as a power of its rank above ``low``. The
    support is finite, so any ``a > 0`` works (numpy's unbounded ``zipf`` needs ``a > 1`` and
    would then be truncated, skewing it). Sampled by inverse CDF over the support.
    """
    _check_n(n)
    _check_range(low, high)
    _check_zipf(a)
    ranks = np.arange(1, high - low + 2, dtype=np.float64)
    return _inverse_cdf(np.arange(low, high + 1, dtype=np.int64), ranks**-a, n, seed)


_ROW_HINT = "expected 'length,{}' rows"


def read_length_histogram(path: str | Path) -> tuple[tuple[int, float], ...]:
    """Parse an empirical length histogram file: ``((length, weight), ...)`` in file order.

    The format is CSV: blank lines and ``#`` comments (whole-line or trailing) are skipped;
    the first other line is the header ``length,count`` or ``length,weight``; every further
    line is ``<length>,<count>`` with an integer length >= 1 and a count that is an integer
    >= 0 (``count``) or a finite number >= 0 (``weight``). A length appears once; at least one
    count is positive. Anything else is refused with ValueError, one line
    ``<path>:<line>: <what is wrong>; expected 'length,count' rows``, so a user fixes the file
    before any work runs.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ValueError(
            f"{path}: cannot read the length histogram ({e.strerror or e}); "
            f"expected a CSV file of 'length,count' rows"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text; expected 'length,count' rows") from None
    column = ""
    rows: list[tuple[int, float]] = []
    seen: dict[int, int] = {}
    first_row = 0
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        body = line.split("#", 1)[0].strip()
        if not body:
            continue
        fields = [f.strip() for f in body.split(",")]
        if not column:
            got = [f.lower() for f in fields]
            if len(got) != 2 or got[0] != "length" or got[1] not in HISTOGRAM_HEADERS:
                raise ValueError(
                    f"{path}:{number}: header {body!r} is not 'length,count' or "
                    "'length,weight'; expected a header, then 'length,count' rows"
                )
            column = got[1]
            continue
        hint = _ROW_HINT.format(column)
        if len(fields) != 2:
            raise ValueError(f"{path}:{number}: {len(fields)} fields in {body!r}; {hint}")
        length_text, weight_text = fields
        if not re.fullmatch(r"[+-]?\d+", length_text):
            raise ValueError(f"{path}:{number}: length {length_text!r} is not an integer; {hint}")
        length = int(length_text)
        if length < 1:
            raise ValueError(f"{path}:{number}: length {length} is < 1 token; {hint}")
        if length in seen:
            raise ValueError(
                f"{path}:{number}: length {length} repeats line {seen[length]}; {hint}"
            )
        weight = _histogram_weight(weight_text, column)
        if weight is None:
            what = "an integer >= 0" if column == "count" else "a finite number >= 0"
            raise ValueError(f"{path}:{number}: {column} {weight_text!r} is not {what}; {hint}")
        seen[length] = number
        first_row = first_row or number
        rows.append((length, weight))
    if not column:
        raise ValueError(
            f"{path}:{max(len(lines), 1)}: no header (the file is empty or only "
            "comments); expected a header, then 'length,count' rows"
        )
    if not rows:
        raise ValueError(
            f"{path}:{max(len(lines), 1)}: no rows after the header; {_ROW_HINT.format(column)}"
        )
    if not any(w > 0 for _, w in rows):
        raise ValueError(
            f"{path}:{first_row}: every {column} is 0, nothing to draw; "
            f"{_ROW_HINT.format(column)} with at least one {column} > 0"
        )
    return tuple(rows)


def _histogram_weight(text: str, column: str) -> float | None:
    """A histogram row's count (integer >= 0) or weight (finite number >= 0); None if not."""
    if column == "count":
        return float(int(text)) if re.fullmatch(r"\+?\d+", text) else None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _check_histogram(histogram: tuple[tuple[int, float], ...]) -> None:
    if not histogram:
        raise ValueError("an empirical length histogram needs at least one (length, count)")
    lengths = [k for k, _ in histogram]
    if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in lengths):
        raise ValueError(f"empirical lengths must be integers >= 1, got {lengths}")
    if len(set(lengths)) != len(lengths):
        raise ValueError("empirical lengths must be distinct")
    weights = [w for _, w in histogram]
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not any(w > 0 for w in weights):
        raise ValueError(f"empirical counts must be finite, >= 0, one > 0; got {weights}")


def empirical_lengths(
    histogram: tuple[tuple[int, float], ...], n: int, seed: int = 0
) -> np.ndarray:
    """Return ``n`` lengths drawn from ``((length, count), ...)``, proportionally to count."""
    _check_n(n)
    _check_histogram(histogram)
    values = np.array([k for k, _ in histogram], dtype=np.int64)
    weights = np.array([w for _, w in histogram], dtype=np.float64)
    return _inverse_cdf(values, weights, n, seed)


_DEFAULT_HIGH = 1 << 20


@dataclass(frozen=True)
class LengthSpec:
    """Declarative token-length distribution, validated on construction; ``sample(n, seed)``.

    ``fixed`` uses ``value``; ``uniform`` uses ``low``/``high`` (inclusive); ``lognormal`` uses
    ``median``/``sigma`` and clips to ``low``/``high``; ``zipf`` uses the exponent ``a`` over
    ``[low, high]``; ``empirical`` reads ``file`` (``read_length_histogram``) into
    ``histogram`` at construction, or takes ``histogram`` directly when no file is named.
    A parameter the kind does not use must keep its default (``LENGTH_PARAMS``), so a setting
    is never silently ignored. Frozen: the histogram is read once, so a file edited after the
    preset was loaded cannot change a run half-way.
    """

    kind: str
    value: int = 0
    low: int = 1
    high: int = _DEFAULT_HIGH
    median: float = 0.0
    sigma: float = 0.0
    a: float = 0.0
    file: str = ""
    histogram: tuple[tuple[int, float], ...] = ()
    file_sha256: str = field(default="", compare=False)
    """SHA-256 of the histogram file's bytes (set from ``file``), recorded for reproduction."""

    def __post_init__(self) -> None:
        if self.kind not in LENGTH_KINDS:
            raise ValueError(
                f"unknown length kind {self.kind!r}; valid kinds: {', '.join(LENGTH_KINDS)}"
            )
        defaults = {
            "value": 0,
            "low": 1,
            "high": _DEFAULT_HIGH,
            "median": 0.0,
            "sigma": 0.0,
            "a": 0.0,
            "file": "",
        }
        used = LENGTH_PARAMS[self.kind]
        for name, default in defaults.items():
            if name not in used and getattr(self, name) != default:
                raise ValueError(
                    f"{name!r} does not apply to length kind {self.kind!r}; "
                    f"its parameters: {', '.join(used)}"
                )
        if self.kind != "empirical" and self.histogram:
            raise ValueError(
                f"'histogram' only applies to length kind 'empirical', not {self.kind!r}"
            )
        if self.kind == "empirical" and self.file:
            object.__setattr__(self, "histogram", read_length_histogram(self.file))
            digest = hashlib.sha256(Path(self.file).read_bytes()).hexdigest()
            object.__setattr__(self, "file_sha256", digest)
        self.sample(0)  # run the sampler's own argument checks now, not at first use

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Draw ``n`` lengths (int64), reproducibly from ``seed``."""
        if self.kind == "fixed":
            return fixed_lengths(self.value, n)
        if self.kind == "uniform":
            return uniform_lengths(self.low, self.high, n, seed)
        if self.kind == "zipf":
            return zipf_lengths(self.a, self.low, self.high, n, seed)
        if self.kind == "empirical":
            return empirical_lengths(self.histogram, n, seed)
        return lognormal_lengths(self.median, self.sigma, n, seed, self.low, self.high)

    @property
    def max_length(self) -> int:
        """The longest length a draw can give (what must fit in the model's context)."""
        if self.kind == "fixed":
            return int(self.value)
        if self.kind == "empirical":
            return max(k for k, w in self.histogram if w > 0)
        return int(self.high)

    def to_json(self) -> dict[str, Any]:
        """The kind and its parameters as plain JSON values (what a record keeps); an
        empirical spec gives its file and the file's SHA-256, not the whole histogram.
        """
        out: dict[str, Any] = {"kind": self.kind}
        for name in LENGTH_PARAMS[self.kind]:
            out[name] = getattr(self, name)
        if self.kind == "empirical":
            out["sha256"] = self.file_sha256
            if not self.file:
                out["histogram"] = [[k, w] for k, w in self.histogram]
        return out

    def label(self) -> str:
        """A short name for workload labels: ``32``, ``u16-256``, ``ln96s0.6-16-512``,
        ``zipf1.2-4-64``, ``emp-<file stem>-<sha256 prefix>``.
        """
        if self.kind == "fixed":
            return str(self.value)
        if self.kind == "uniform":
            return f"u{self.low}-{self.high}"
        if self.kind == "lognormal":
            return f"ln{self.median:g}s{self.sigma:g}-{self.low}-{self.high}"
        if self.kind == "zipf":
            return f"zipf{self.a:g}-{self.low}-{self.high}"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.file).stem) if self.file else "hist"
        digest = self.file_sha256 or hashlib.sha256(repr(self.histogram).encode()).hexdigest()
        return f"emp-{stem}-{digest[:8]}"

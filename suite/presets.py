"""Preset files: TOML that names registered techniques and workloads, validated up front.

Every key is checked against a schema before anything runs; a bad key, type or value raises
ConfigError with ``file:line`` and the valid choices. ``tomllib`` does not report line numbers,
so ``_Locator`` finds them in the source text (a table header, then the key inside its block);
that is enough for hand-written presets, which is what this serves.
"""

from __future__ import annotations

import itertools
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effbench.suite import registry
from effbench.suite.errors import ConfigError
from effbench.suite.technique import LEVELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class RunSettings:
    name: str = "run"
    description: str = ""
    device: str = "cpu"
    model: str = "tiny"
    draft: str = "tiny-draft"
    dtype: str = "auto"
    seed: int = 0
    target_rel_ci: float = 0.02
    case_budget_s: float = 3.0
    warmup_s: float = 0.05
    threads: int = 0
    cold_cache: bool = False


@dataclass(frozen=True)
class ShapeSpec:
    """A kernel-level attention shape; head counts default to the model's (0 = model's)."""

    name: str
    batch: int
    q_len: int
    kv_len: int
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0


@dataclass(frozen=True)
class KernelSettings:
    attention_shapes: tuple[ShapeSpec, ...] = ()
    kv_tokens: tuple[int, ...] = (512,)


@dataclass(frozen=True)
class EngineSettings:
    prompts: int = 16
    batch: int = 8
    max_new_tokens: int = 32
    min_repeats: int = 3
    max_repeats: int = 10


@dataclass(frozen=True)
class ServingSettings:
    requests: int = 24
    rate: float = 8.0
    arrival: str = "poisson"
    cv: float = 1.0
    output_tokens: int = 32
    max_batch: int = 8
    max_tokens: int = 512
    slo: tuple[tuple[str, float], ...] = (("ttft_s", 0.5), ("tpot_s", 0.05))


@dataclass(frozen=True)
class Bench:
    """One technique with a parameter grid, at some of its levels."""

    technique: str
    levels: tuple[str, ...]
    grid: tuple[tuple[str, tuple[Any, ...]], ...]
    where: str

    def param_sets(self) -> list[dict[str, Any]]:
        names = [k for k, _ in self.grid]
        return [dict(zip(names, combo)) for combo in itertools.product(*(v for _, v in self.grid))]


@dataclass(frozen=True)
class Preset:
    path: str
    run: RunSettings
    kernel: KernelSettings
    engine: EngineSettings
    serving: ServingSettings
    benches: tuple[Bench, ...] = field(default_factory=tuple)
    # [gate] threshold overrides (effbench.suite.gate.Thresholds)
    gate: tuple[tuple[str, Any], ...] = ()


_SECTIONS = ("run", "kernel", "engine", "serving", "bench", "gate")
_SLO_KEYS = ("ttft_s", "tpot_s", "e2e_s")
_ARRIVALS = ("poisson", "gamma", "constant")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


class _Locator:
    """Maps a key path to ``file:line`` in the TOML text."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def _header(self, table: str, index: int | None) -> int | None:
        pat = re.compile(rf"^\s*\[\[?\s*{re.escape(table)}\s*\]\]?\s*(#.*)?$")
        hits = [i for i, ln in enumerate(self.lines) if pat.match(ln)]
        if not hits:
            return None
        return hits[index or 0] if (index or 0) < len(hits) else hits[-1]

    def at(self, table: str | None, key: str | None = None, index: int | None = None) -> str:
        start = 0
        if table:
            h = self._header(table, index)
            if h is None:
                return self.path
            start = h
            if key is None:
                return f"{self.path}:{h + 1}"
        if key is not None:
            pat = re.compile(rf"^\s*{re.escape(key)}\s*=|[{{,]\s*{re.escape(key)}\s*=")
            for i in range(start, len(self.lines)):
                if i > start and table and self.lines[i].lstrip().startswith("["):
                    break
                if pat.search(self.lines[i]):
                    return f"{self.path}:{i + 1}"
        return f"{self.path}:{start + 1}" if table else self.path


def _check_keys(
    got: Mapping[str, Any], allowed: list[str], what: str, loc: _Locator, table: str | None,
    index: int | None = None,
) -> None:
    for k in got:
        if k not in allowed:
            raise ConfigError(
                f"unknown key '{k}' in {what}; valid keys: {allowed}", loc.at(table, k, index)
            )


def _typed(value: Any, want: type, key: str, where: str, lo: float | None = None) -> Any:
    ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"'{key}' must be {want.__name__}, got {value!r}", where)
    if lo is not None and value < lo:
        raise ConfigError(f"'{key}' = {value!r} must be >= {lo}", where)
    return value


def _fill(cls: type, got: Mapping[str, Any], table: str, loc: _Locator, lows: dict) -> Any:
    defaults = cls()
    names = [f for f in defaults.__dataclass_fields__]
    _check_keys(got, names, f"[{table}]", loc, table)
    kwargs = {}
    for k, v in got.items():
        want = type(getattr(defaults, k))
        kwargs[k] = _typed(v, want, k, loc.at(table, k), lows.get(k))
    return cls(**kwargs)


def _run_settings(got: Mapping[str, Any], loc: _Locator) -> RunSettings:
    lows = {"seed": 0, "target_rel_ci": 1e-4, "case_budget_s": 0.01, "warmup_s": 0, "threads": 0}
    rs = _fill(RunSettings, got, "run", loc, lows)
    if rs.dtype not in _DTYPES:
        raise ConfigError(
            f"dtype '{rs.dtype}' is not one of {list(_DTYPES)}", loc.at("run", "dtype")
        )
    return rs


def _kernel_settings(got: Mapping[str, Any], loc: _Locator) -> KernelSettings:
    _check_keys(got, ["attention", "kvcache"], "[kernel]", loc, "kernel")
    att = got.get("attention", {})
    _check_keys(att, ["shapes"], "[kernel.attention]", loc, "kernel.attention")
    shapes = []
    for i, s in enumerate(att.get("shapes", [])):
        where = loc.at("kernel.attention", "shapes")
        if not isinstance(s, dict):
            raise ConfigError(f"shape #{i + 1} must be a table", where)
        fields_ = list(ShapeSpec.__dataclass_fields__)
        _check_keys(s, fields_, f"attention shape #{i + 1}", loc, "kernel.attention")
        for k in ("name", "batch", "q_len", "kv_len"):
            if k not in s:
                raise ConfigError(f"attention shape #{i + 1} needs '{k}'", where)
        for k, v in s.items():
            if k != "name":
                _typed(v, int, k, where, 0 if k in ("heads", "kv_heads", "head_dim") else 1)
        if s["q_len"] > s["kv_len"]:
            raise ConfigError(f"shape '{s['name']}': q_len must be <= kv_len", where)
        shapes.append(ShapeSpec(**s))
    kv = got.get("kvcache", {})
    _check_keys(kv, ["tokens"], "[kernel.kvcache]", loc, "kernel.kvcache")
    toks = kv.get("tokens", [512])
    if not isinstance(toks, list) or not toks:
        raise ConfigError("'tokens' must be a non-empty list", loc.at("kernel.kvcache", "tokens"))
    for t in toks:
        _typed(t, int, "tokens", loc.at("kernel.kvcache", "tokens"), 1)
    return KernelSettings(tuple(shapes), tuple(toks))


def _serving_settings(got: Mapping[str, Any], loc: _Locator) -> ServingSettings:
    got = dict(got)
    slo = got.pop("slo", None)
    lows = {"requests": 1, "rate": 1e-6, "cv": 1e-6, "output_tokens": 1, "max_batch": 1,
            "max_tokens": 1}
    ss = _fill(ServingSettings, got, "serving", loc, lows)
    if ss.arrival not in _ARRIVALS:
        raise ConfigError(
            f"arrival '{ss.arrival}' is not one of {list(_ARRIVALS)}", loc.at("serving", "arrival")
        )
    if slo is not None:
        where = loc.at("serving", "slo")
        if not isinstance(slo, dict):
            raise ConfigError("'slo' must be a table like { ttft_s = 0.5 }", where)
        _check_keys(slo, list(_SLO_KEYS), "slo", loc, "serving")
        items = tuple((k, _typed(v, float, k, where, 0.0)) for k, v in slo.items())
        ss = ServingSettings(**{**ss.__dict__, "slo": items})
    return ss


def _bench(i: int, got: Mapping[str, Any], loc: _Locator) -> Bench:
    where = loc.at("bench", None, index=i)
    _check_keys(got, ["technique", "levels", "params"], "[[bench]]", loc, "bench", i)
    if "technique" not in got:
        raise ConfigError("[[bench]] needs 'technique'", where)
    tech = registry.get(got["technique"], loc.at("bench", "technique", index=i))
    levels = got.get("levels", list(tech.levels))
    lwhere = loc.at("bench", "levels", index=i)
    if not isinstance(levels, list) or not levels:
        raise ConfigError("'levels' must be a non-empty list", lwhere)
    for lv in levels:
        if lv not in LEVELS:
            raise ConfigError(f"unknown level '{lv}'; valid levels: {list(LEVELS)}", lwhere)
        if lv not in tech.levels:
            raise ConfigError(
                f"technique '{tech.name}' does not run at level '{lv}'; "
                f"its levels: {list(tech.levels)}",
                lwhere,
            )
    params = got.get("params", {})
    pwhere = loc.at("bench", "params", index=i)
    if not isinstance(params, dict):
        raise ConfigError("'params' must be a table of name = value or [values]", pwhere)
    grid = []
    for name, vals in params.items():
        vals = vals if isinstance(vals, list) else [vals]
        if not vals:
            raise ConfigError(f"parameter '{name}' has an empty list of values", pwhere)
        for v in vals:
            tech.resolve({name: v}, pwhere)
        grid.append((name, tuple(vals)))
    return Bench(tech.name, tuple(levels), tuple(grid), where)


def parse(text: str, path: str = "<preset>") -> Preset:
    """Validate preset ``text``; raise ConfigError with file:line on the first problem."""
    loc = _Locator(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", path) from None
    _check_keys(data, list(_SECTIONS), "the preset", loc, None)
    benches = data.get("bench", [])
    if not isinstance(benches, list) or not benches:
        raise ConfigError("a preset needs at least one [[bench]] table", path)
    return Preset(
        path=path,
        run=_run_settings(data.get("run", {}), loc),
        kernel=_kernel_settings(data.get("kernel", {}), loc),
        engine=_fill(EngineSettings, data.get("engine", {}), "engine", loc,
                     {k: 1 for k in EngineSettings.__dataclass_fields__}),
        serving=_serving_settings(data.get("serving", {}), loc),
        benches=tuple(_bench(i, b, loc) for i, b in enumerate(benches)),
        gate=_gate(data.get("gate", {}), loc),
    )


def _gate(got: Any, loc: _Locator) -> tuple[tuple[str, Any], ...]:
    """Validate ``[gate]`` threshold overrides now, so a typo fails before any run."""
    from effbench.suite.gate import Thresholds

    Thresholds.from_dict(got, loc.at("gate", next(iter(got), None) if isinstance(got, dict)
                                     else None))
    return tuple(sorted(got.items()))


def builtin_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load(name_or_path: str) -> Preset:
    """A built-in preset by name (``smoke``, ``cpu-default``) or a TOML file by path."""
    p = Path(name_or_path)
    if not p.suffix and (PRESET_DIR / f"{name_or_path}.toml").exists():
        p = PRESET_DIR / f"{name_or_path}.toml"
    if not p.exists():
        raise ConfigError(
            f"no preset '{name_or_path}': not a file, and not a built-in preset "
            f"(built-in: {builtin_presets()})"
        )
    return parse(p.read_text(), str(p))

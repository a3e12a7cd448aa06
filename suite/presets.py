"""Preset files: TOML that names registered techniques and workloads, validated up front.

Every key is checked against a schema before anything runs; a bad key, type or value raises
ConfigError with ``file:line`` and the valid choices (effbench.suite.preset_checks finds the
lines). The ``[kernel.<family>]`` tables are not known here: each family declares how its own
table is parsed (``Family.kernel_section``), so a new family brings its kernel settings along.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from effbench.kernels_ref.compiled import COMPILE_MODES
from effbench.suite import registry
from effbench.suite.engine_workloads import parse_workload
from effbench.suite.errors import ConfigError
from effbench.suite.family import families
from effbench.suite.preset_checks import Locator, Section, check_keys, typed
from effbench.suite.technique import LEVELS
from effbench.suite.workloads import (
    LENGTH_KINDS,
    LENGTH_PARAMS,
    LENGTH_REQUIRED,
    LengthSpec,
)

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
    # intra-op threads: "auto" (the cores really free) or a count (effbench.suite.threads)
    threads: int | str = "auto"
    cold_cache: bool = False


@dataclass(frozen=True)
class KernelSettings:
    """The ``[kernel.<family>]`` tables, each parsed by its family's ``kernel_section``.

    ``preset.kernel["attention"]`` is what the attention family's parser returned (its
    defaults when the preset has no such table); families without a parser have no entry.
    """

    sections: tuple[tuple[str, Any], ...] = ()

    def __getitem__(self, family: str) -> Any:
        for name, settings in self.sections:
            if name == family:
                return settings
        raise KeyError(f"no [kernel.{family}] settings: family '{family}' declares no "
                       "kernel_section")


@dataclass(frozen=True)
class EngineSettings:
    """``[engine]``: the offline generation workload; ``kv_memory_cap`` (bytes, 0: none) also
    measures the largest batch the engine's memory-aware admission runs under that cap.
    """

    prompts: int = 16
    batch: int = 8
    max_new_tokens: int = 32
    min_repeats: int = 3
    max_repeats: int = 10
    kv_memory_cap: int = 0
    workload: str = "eval"  # eval, long-eval:N, retrieval:..., editing (engine_workloads)
    compile: str = "off"  # off, default, reduce-overhead (effbench.kernels_ref.compiled)


@dataclass(frozen=True)
class ServingSettings:
    """``[serving]``: the real-time workload (effbench.suite.levels.serving).

    ``prompt_len`` and ``output_len`` (optional ``{ kind = ..., ... }`` tables, kinds of
    effbench.suite.workloads.LengthSpec) draw each request's prompt and output length from a
    distribution; when absent the requests take the eval prompts in turn and generate
    ``output_tokens`` each, as before they existed. A relative empirical ``file`` is resolved
    against the preset file's folder, and read (and checked) when the preset loads.

    ``endpoint`` (an OpenAI-compatible base URL such as ``http://127.0.0.1:8000/v1``) makes the
    serving level measure that server instead of the in-process engine, with the same workload
    and metrics (effbench.suite.levels.serving_endpoint, docs/SERVING.md); the other
    ``endpoint_*`` keys, ``max_concurrency``, ``tokenizer``, ``ignore_eos`` and ``timeout_s``
    apply to endpoint runs only. ``endpoint_name`` is the technique label of its records.
    """

    requests: int = 24
    rate: float = 8.0
    arrival: str = "poisson"
    cv: float = 1.0
    output_tokens: int = 32
    max_batch: int = 8
    max_tokens: int = 512
    slo: tuple[tuple[str, float], ...] = (("ttft_s", 0.5), ("tpot_s", 0.05))
    prompt_len: LengthSpec | None = None
    output_len: LengthSpec | None = None
    endpoint: str = ""
    endpoint_name: str = "endpoint"
    endpoint_model: str = ""
    endpoint_api: str = "completions"
    max_concurrency: int = 0
    tokenizer: str = ""
    ignore_eos: bool = True
    timeout_s: float = 120.0


@dataclass(frozen=True)
class TklqtSweepSettings:
    """``[profile.tklqt]``: a TKLQT batch-size sweep of the dense engine, run with the preset
    (effbench.suite.profiling; the SKIP claims read it).

    One sweep per ``compile`` mode (``off``, ``default``, ``reduce-overhead``), each at every
    batch size, ``prompt_len`` random prompt tokens and ``new_tokens`` generated per request.
    """

    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    compile: tuple[str, ...] = ("off",)
    prompt_len: int = 64
    new_tokens: int = 16


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
    # [profile.tklqt]: a TKLQT sweep run with the preset (None: none)
    tklqt_sweep: TklqtSweepSettings | None = None


_SECTIONS = ("run", "kernel", "engine", "serving", "bench", "gate", "profile")
_PROFILE_SWEEPS = ("tklqt",)
_SLO_KEYS = ("ttft_s", "tpot_s", "e2e_s")
_ARRIVALS = ("poisson", "gamma", "constant")
ENDPOINT_APIS = ("completions", "chat")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:+-")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _fill(cls: type, got: Mapping[str, Any], table: str, loc: Locator, lows: dict) -> Any:
    defaults = cls()
    names = [f for f in defaults.__dataclass_fields__]
    check_keys(got, names, f"[{table}]", loc, table)
    kwargs = {}
    for k, v in got.items():
        want = type(getattr(defaults, k))
        kwargs[k] = typed(v, want, k, loc.at(table, k), lows.get(k))
    return cls(**kwargs)


def _run_settings(got: Mapping[str, Any], loc: Locator) -> RunSettings:
    got = dict(got)
    threads = got.pop("threads", "auto")
    lows = {"seed": 0, "target_rel_ci": 1e-4, "case_budget_s": 0.01, "warmup_s": 0}
    rs = _fill(RunSettings, got, "run", loc, lows)
    if rs.dtype not in _DTYPES:
        raise ConfigError(
            f"dtype '{rs.dtype}' is not one of {list(_DTYPES)}", loc.at("run", "dtype")
        )
    return replace(rs, threads=_threads_setting(threads, loc.at("run", "threads")))


def _threads_setting(value: Any, where: str) -> int | str:
    """``[run] threads``: ``"auto"`` or a count >= 1; the upper bound (the usable cores) is
    checked when a run starts, on the machine that runs it (effbench.suite.threads).
    """
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool)
                           and value >= 1):
        return value
    raise ConfigError(f"'threads' must be \"auto\" or an integer >= 1 (at most the usable "
                      f"CPU cores), got {value!r}", where)


def _kernel_settings(got: Mapping[str, Any], loc: Locator) -> KernelSettings:
    """``[kernel]``: one sub-table per family that declares a ``kernel_section`` parser."""
    parsers = {f.name: f.kernel_section for f in families() if f.kernel_section is not None}
    for k in got:
        if k not in parsers:  # located at its [kernel.<k>] header, else at `k = ...`
            where = loc.at(f"kernel.{k}")
            where = loc.at("kernel", k) if where == loc.path else where
            raise ConfigError(f"unknown key '{k}' in [kernel]; valid keys: {list(parsers)}",
                              where)
    sections = []
    for name, parse in parsers.items():
        table = got.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"[kernel.{name}] must be a table", loc.at("kernel", name))
        sections.append((name, parse(table, Section(loc, f"kernel.{name}"))))
    return KernelSettings(tuple(sections))


def _engine_settings(got: Mapping[str, Any], loc: Locator) -> EngineSettings:
    lows = {k: 0 if k == "kv_memory_cap" else 1 for k in EngineSettings.__dataclass_fields__
            if k not in ("workload", "compile")}
    es = _fill(EngineSettings, got, "engine", loc, lows)
    try:
        parse_workload(es.workload)
    except ValueError as e:
        raise ConfigError(str(e), loc.at("engine", "workload")) from None
    _check_compile(es.compile, loc.at("engine", "compile"))
    return es


def _check_compile(mode: str, where: str) -> None:
    """``[engine] compile`` / ``--compile``: one of the compile modes (the device is checked
    when the run starts: ``reduce-overhead`` needs CUDA).
    """
    if mode not in COMPILE_MODES:
        raise ConfigError(f"compile mode {mode!r} is not one of {list(COMPILE_MODES)}", where)


def with_compile(preset: Preset, mode: str | None) -> Preset:
    """The preset with ``[engine] compile`` replaced (``--compile``; None keeps the preset's)."""
    if mode is None:
        return preset
    _check_compile(mode, "--compile")
    return replace(preset, engine=replace(preset.engine, compile=mode))


def _profile_settings(got: Any, loc: Locator) -> TklqtSweepSettings | None:
    """``[profile]``: profiling sweeps run with the preset; today ``[profile.tklqt]``."""
    if not isinstance(got, Mapping):
        raise ConfigError("[profile] must be a table", loc.at("profile"))
    check_keys(got, list(_PROFILE_SWEEPS), "[profile]", loc, "profile")
    if "tklqt" not in got:
        return None
    table = got["tklqt"]
    sec = Section(loc, "profile.tklqt")
    if not isinstance(table, Mapping):
        raise ConfigError("[profile.tklqt] must be a table", sec.at())
    sec.check_keys(table, list(TklqtSweepSettings.__dataclass_fields__))
    out = TklqtSweepSettings()
    sizes = table.get("batch_sizes", list(out.batch_sizes))
    if not isinstance(sizes, list) or not sizes:
        raise ConfigError("'batch_sizes' must be a non-empty list of integers >= 1, like "
                          "[1, 4, 16]", sec.at("batch_sizes"))
    sizes = [sec.typed(b, int, "batch_sizes", 1) for b in sizes]
    modes = table.get("compile", list(out.compile))
    modes = [modes] if isinstance(modes, str) else modes
    if not isinstance(modes, list) or not modes:
        raise ConfigError(f"'compile' must be a mode or a list of modes of "
                          f"{list(COMPILE_MODES)}", sec.at("compile"))
    for mode in modes:
        _check_compile(mode, sec.at("compile"))
    return TklqtSweepSettings(
        batch_sizes=tuple(sorted(set(sizes))),
        compile=tuple(dict.fromkeys(modes)),
        prompt_len=sec.typed(table.get("prompt_len", out.prompt_len), int, "prompt_len", 1),
        new_tokens=sec.typed(table.get("new_tokens", out.new_tokens), int, "new_tokens", 2),
    )


def _serving_settings(got: Mapping[str, Any], loc: Locator) -> ServingSettings:
    got = dict(got)
    slo = got.pop("slo", None)
    lengths = {key: got.pop(key) for key in _LENGTH_SETTINGS if key in got}
    lows = {"requests": 1, "rate": 1e-6, "cv": 1e-6, "output_tokens": 1, "max_batch": 1,
            "max_tokens": 1, "max_concurrency": 0, "timeout_s": 1e-3}
    ss = _fill(ServingSettings, got, "serving", loc, lows)
    ss = checked_endpoint(ss, lambda key: loc.at("serving", key))
    if ss.arrival not in _ARRIVALS:
        raise ConfigError(
            f"arrival '{ss.arrival}' is not one of {list(_ARRIVALS)}", loc.at("serving", "arrival")
        )
    if slo is not None:
        where = loc.at("serving", "slo")
        if not isinstance(slo, dict):
            raise ConfigError("'slo' must be a table like { ttft_s = 0.5 }", where)
        check_keys(slo, list(_SLO_KEYS), "slo", loc, "serving")
        items = tuple((k, typed(v, float, k, where, 0.0)) for k, v in slo.items())
        ss = ServingSettings(**{**ss.__dict__, "slo": items})
    if "output_len" in lengths and "output_tokens" in got:
        raise ConfigError("'output_len' and 'output_tokens' both set the output lengths; keep "
                          "one ('output_len' draws them from a distribution, 'output_tokens' "
                          "fixes them)", loc.at("serving", "output_tokens"))
    specs = {key: _length_spec(key, table, loc) for key, table in lengths.items()}
    return replace(ss, **specs) if specs else ss


def checked_endpoint(ss: ServingSettings, where: Any) -> ServingSettings:
    """``ss`` with its endpoint keys checked and ``endpoint`` normalised (no trailing ``/``).

    ``where(key)`` locates a key for the error. The URL must be ``http(s)://host[:port]/...``;
    ``endpoint_name`` labels the records' technique, so it must be a plain name (letters,
    digits, ``._:+-``) and not a registered technique's (whose records it would mix with).
    Whether the server answers is checked when a run starts (``serving_endpoint.preflight``).
    """
    from urllib.parse import urlsplit

    if ss.endpoint_api not in ENDPOINT_APIS:
        raise ConfigError(f"endpoint_api '{ss.endpoint_api}' is not one of "
                          f"{list(ENDPOINT_APIS)}", where("endpoint_api"))
    name = ss.endpoint_name
    if not name or not set(name) <= _NAME_CHARS:
        raise ConfigError(f"endpoint_name {name!r} must be a non-empty name of letters, digits "
                          "and ._:+- (it labels the records' technique)", where("endpoint_name"))
    if name in {t.name for t in registry.techniques()}:
        raise ConfigError(f"endpoint_name '{name}' is a registered technique; name the server "
                          "and its configuration instead (e.g. 'effbench-serve-chunked')",
                          where("endpoint_name"))
    if not ss.endpoint:
        return ss
    url = ss.endpoint.rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"endpoint {ss.endpoint!r} is not an http(s) URL like "
                          "http://127.0.0.1:8000/v1", where("endpoint"))
    return replace(ss, endpoint=url)


def with_endpoint(preset: Preset, endpoint: str | None, name: str | None) -> Preset:
    """The preset with ``[serving] endpoint``/``endpoint_name`` replaced (``--endpoint``,
    ``--endpoint-name``; None keeps the preset's), checked like the preset's own keys.
    """
    given = {k: v for k, v in (("endpoint", endpoint), ("endpoint_name", name))
             if v is not None}
    if not given:
        return preset
    ss = checked_endpoint(replace(preset.serving, **given),
                          lambda key: f"--{key.replace('_', '-')}")
    return replace(preset, serving=ss)


_LENGTH_SETTINGS = ("prompt_len", "output_len")
_LENGTH_TYPES = {"value": int, "low": int, "high": int, "median": float, "sigma": float,
                 "a": float, "file": str}
_LENGTH_LOWS = {"value": 1, "low": 1, "high": 1, "sigma": 0.0}


def _length_spec(key: str, table: Any, loc: Locator) -> LengthSpec:
    """``[serving] prompt_len`` / ``output_len``: ``{ kind = ..., <the kind's parameters> }``.

    Checked like every preset key (one line, ``file:line``, the valid choices); an empirical
    ``file`` is resolved against the preset's folder and read now, so a malformed histogram is
    refused before anything runs, with its own ``file:line``.
    """
    where = loc.at(f"serving.{key}")  # a [serving.<key>] sub-table, else `key = { ... }`
    where = loc.at("serving", key) if where == loc.path else where
    example = '{ kind = "uniform", low = 16, high = 256 }'
    if not isinstance(table, Mapping):
        raise ConfigError(f"'{key}' must be a table like {example}", where)
    kind = table.get("kind")
    if kind not in LENGTH_KINDS:
        got = f"no 'kind' in [serving] {key}" if kind is None else (
            f"unknown kind {kind!r} in [serving] {key}")
        raise ConfigError(f"{got}; valid kinds: {list(LENGTH_KINDS)}", where)
    allowed = ["kind", *LENGTH_PARAMS[kind]]
    for name in table:
        if name not in allowed:
            raise ConfigError(f"unknown key '{name}' in [serving] {key} of kind '{kind}'; "
                              f"valid keys: {allowed}", where)
    missing = [name for name in LENGTH_REQUIRED[kind] if name not in table]
    if missing:
        raise ConfigError(f"[serving] {key} of kind '{kind}' needs {missing}; valid keys: "
                          f"{allowed}", where)
    params = {name: typed(v, _LENGTH_TYPES[name], f"{key}.{name}", where, _LENGTH_LOWS.get(name))
              for name, v in table.items() if name != "kind"}
    if kind == "empirical":
        file = Path(params["file"]).expanduser()
        if not file.is_absolute() and Path(loc.path).is_file():
            file = Path(loc.path).absolute().parent / file
        try:
            return LengthSpec(kind, file=str(file))
        except ValueError as e:  # already "<csv>:<line>: ...": keep that location first
            raise ConfigError(f"{e} (the histogram of [serving] {key} at {where})") from None
    try:
        return LengthSpec(kind, **params)
    except ValueError as e:
        raise ConfigError(f"[serving] {key}: {e}", where) from None


def _bench(i: int, got: Mapping[str, Any], loc: Locator) -> Bench:
    where = loc.at("bench", None, index=i)
    check_keys(got, ["technique", "levels", "params"], "[[bench]]", loc, "bench", i)
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
    loc = Locator(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}", path) from None
    check_keys(data, list(_SECTIONS), "the preset", loc, None)
    benches = data.get("bench", [])
    serving = _serving_settings(data.get("serving", {}), loc)
    if not isinstance(benches, list) or not (benches or serving.endpoint):
        raise ConfigError("a preset needs at least one [[bench]] table (or a [serving] "
                          "endpoint to measure)", path)
    return Preset(
        path=path,
        run=_run_settings(data.get("run", {}), loc),
        kernel=_kernel_settings(data.get("kernel", {}), loc),
        engine=_engine_settings(data.get("engine", {}), loc),
        serving=serving,
        benches=tuple(_bench(i, b, loc) for i, b in enumerate(benches)),
        gate=_gate(data.get("gate", {}), loc),
        tklqt_sweep=_profile_settings(data.get("profile", {}), loc),
    )


def _gate(got: Any, loc: Locator) -> tuple[tuple[str, Any], ...]:
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

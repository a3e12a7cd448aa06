"""The attention family: backends measured on synthetic tensors and inside the engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from effbench.kernels_ref.protocols import AttentionBackend
from effbench.suite.errors import ConfigError
from effbench.suite.family import Family, register_family
from effbench.suite.preset_checks import Section


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
class AttentionKernelSettings:
    """``[kernel.attention]``: the shapes kernel cases run on, one workload each."""

    shapes: tuple[ShapeSpec, ...] = ()


def _kernel_section(got: Mapping[str, Any], sec: Section) -> AttentionKernelSettings:
    """Validate ``[kernel.attention] shapes = [{ name, batch, q_len, kv_len, ... }]``."""
    sec.check_keys(got, ["shapes"])
    shapes = []
    for i, s in enumerate(got.get("shapes", [])):
        where = sec.at("shapes")
        if not isinstance(s, dict):
            raise ConfigError(f"shape #{i + 1} must be a table", where)
        sec.check_keys(s, list(ShapeSpec.__dataclass_fields__), f"attention shape #{i + 1}")
        for k in ("name", "batch", "q_len", "kv_len"):
            if k not in s:
                raise ConfigError(f"attention shape #{i + 1} needs '{k}'", where)
        for k, v in s.items():
            if k != "name":
                sec.typed(v, int, k, 0 if k in ("heads", "kv_heads", "head_dim") else 1, where)
        if s["q_len"] > s["kv_len"]:
            raise ConfigError(f"shape '{s['name']}': q_len must be <= kv_len", where)
        shapes.append(ShapeSpec(**s))
    return AttentionKernelSettings(tuple(shapes))


def _workloads(preset: Any) -> list[str]:
    return [s.name for s in preset.kernel["attention"].shapes]


def _run(case: Any, ctx: Any) -> list[Any]:
    from effbench.suite.levels.kernel import attention_case

    return attention_case(case, ctx)


def _timed(case: Any, ctx: Any, impl: Any) -> Any:
    from effbench.suite.levels.kernel import attention_timed

    return attention_timed(case, ctx, impl)


FAMILY = register_family(Family(
    name="attention",
    summary="attention backends: exact, sparse, windowed, real kernels",
    protocol=AttentionBackend,
    levels=("kernel", "engine"),
    engine_slot="attention",
    kernel_workloads=_workloads,
    kernel_run=_run,
    kernel_timed=_timed,
    kernel_needs_model=True,
    kernel_section=_kernel_section,
    order=0,
))

"""Cases: one technique x params x workload x level x device, expanded from a preset.

With ``[serving] endpoint`` set, the serving level measures that OpenAI-compatible server
instead of the in-process engine: the benches' serving cases are replaced by one case whose
technique is the user's name for the server (``[serving] endpoint_name``), in the scheduling
family like every serving case, with no parameters (the server's configuration is in its
name) and ``endpoint`` set to the URL (not part of the case id, so a server measured at
another address is still the same case).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from effbench.kernels_ref.compiled import compile_label
from effbench.suite import registry
from effbench.suite.engine_workloads import parse_workload
from effbench.suite.family import family_index, get_family
from effbench.suite.presets import Preset
from effbench.suite.technique import LEVELS


@dataclass(frozen=True)
class Case:
    technique: str
    family: str
    level: str
    params: tuple[tuple[str, Any], ...]
    workload: str
    device: str
    endpoint: str = ""
    """The OpenAI-compatible base URL a serving case measures; empty: the in-process engine."""

    @property
    def param_dict(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def case_id(self) -> str:
        """Stable identity: the same case in two runs has the same id (resume, gate, compare)."""
        p = ",".join(f"{k}={json.dumps(v)}" for k, v in self.params)
        return f"{self.level}:{self.technique}[{p}]@{self.workload}/{self.device}"


def workload_names(preset: Preset, level: str, family: str) -> list[str]:
    """The workloads a case of this level and family runs on.

    Kernel workloads are the family's own (``Family.kernel_workloads``, none for a family
    without a kernel level); the engine and serving workloads are the level's, from the preset.
    """
    if level == "kernel":
        workloads = get_family(family).kernel_workloads
        return workloads(preset) if workloads is not None else []
    if level == "engine":
        e = preset.engine
        label = parse_workload(e.workload).label(e.prompts, e.batch, e.max_new_tokens)
        return [label + compile_label(e.compile)]
    s = preset.serving
    # length distributions ([serving] prompt_len/output_len) are named only when set, so a
    # preset without them keeps its workload name (and its case ids, baselines, resumes)
    prompt = f"-p{s.prompt_len.label()}" if s.prompt_len else ""
    output = s.output_len.label() if s.output_len else s.output_tokens
    # an endpoint run's concurrency limit, only when set (the in-process level has none)
    limit = f"-c{s.max_concurrency}" if s.endpoint and s.max_concurrency else ""
    return [f"{s.arrival}-r{s.rate:g}-n{s.requests}{prompt}-o{output}{limit}"]


SERVING_FAMILY = "scheduling"
"""The family of every serving case, an endpoint's included (the level runs schedulers)."""


def endpoint_case(preset: Preset, device: str) -> Case:
    """The one serving case of ``[serving] endpoint`` (module docstring)."""
    s = preset.serving
    (workload,) = workload_names(preset, "serving", SERVING_FAMILY)
    return Case(s.endpoint_name, SERVING_FAMILY, "serving", (), workload, device, s.endpoint)


def is_baseline(case: Case) -> bool:
    """Whether the case's technique is its family's baseline (never for an endpoint)."""
    return not case.endpoint and registry.get(case.technique).baseline


def expand(preset: Preset, device: str) -> list[Case]:
    """Every case of the preset, level by level, each family's baseline first."""
    cases: list[Case] = []
    for bench in preset.benches:
        tech = registry.get(bench.technique)
        for params in bench.param_sets():
            full = tech.resolve(params, bench.where)
            for level in bench.levels:
                if level == "serving" and preset.serving.endpoint:
                    continue  # the endpoint's case replaces the in-process serving cases
                for wl in workload_names(preset, level, tech.family):
                    cases.append(
                        Case(tech.name, tech.family, level, tuple(sorted(full.items())), wl,
                             device)
                    )
    if preset.serving.endpoint:
        cases.append(endpoint_case(preset, device))
    seen: set[str] = set()
    unique = [c for c in cases if not (c.case_id in seen or seen.add(c.case_id))]

    def order(c: Case) -> tuple:
        return (LEVELS.index(c.level), family_index(c.family), not is_baseline(c))

    return sorted(unique, key=order)

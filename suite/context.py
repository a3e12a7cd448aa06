"""What every case of one run shares: the device, the models, the eval set, baseline outputs.

Models and baseline results are loaded or computed once per run, on first use, so a preset
with only kernel cases never loads a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from effbench.kernels_ref.checkpoint import (
    KNOWN_CONFIGS,
    config_from_dict,
    load_checkpoint,
    random_model,
    read_config,
    resolve_model,
)
from effbench.kernels_ref.evalset import load_evalset
from effbench.kernels_ref.model import LlamaConfig, LlamaModel
from effbench.kernels_ref.tokenizer import Tokenizer
from effbench.suite.engine_workloads import (
    EngineWorkload,
    check_fits,
    parse_workload,
    workload_items,
)
from effbench.suite.presets import Preset


@dataclass
class RunContext:
    preset: Preset
    device: torch.device
    dtype: torch.dtype
    memo: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def _target(self) -> tuple[LlamaModel, Tokenizer | None]:
        return load_model(self.preset.run.model, self.device, self.dtype, self.preset.run.seed)

    @cached_property
    def model_config(self) -> LlamaConfig:
        """The target's shape, read without loading weights (kernel cases need only this)."""
        if "_target" in self.__dict__:
            return self.model.config
        name = self.preset.run.model
        if name in KNOWN_CONFIGS:
            return config_from_dict({"model_type": "llama", **KNOWN_CONFIGS[name]})
        return config_from_dict(read_config(resolve_model(name)))

    @property
    def model(self) -> LlamaModel:
        return self._target[0]

    @property
    def tokenizer(self) -> Tokenizer:
        """The target's tokenizer; a random-weights model borrows the embedded tiny one."""
        tok = self._target[1]
        if tok is None:
            tok = load_checkpoint(resolve_model("tiny-target"), "cpu")[1]
        return tok

    @cached_property
    def _draft(self) -> tuple[LlamaModel, Tokenizer | None]:
        return load_model(self.preset.run.draft, self.device, self.dtype, self.preset.run.seed)

    @property
    def draft(self) -> LlamaModel:
        return self._draft[0]

    @cached_property
    def evalset(self) -> list[dict]:
        return load_evalset()

    @cached_property
    def eval_tokens(self) -> list[tuple[list[int], list[int]]]:
        """(BOS + prompt ids, continuation ids) of every eval item, tokenized once.

        BOS is prepended as in training and in the model card's perplexity figures.
        """
        tok = self.tokenizer
        return [
            ([tok.bos_id, *tok.encode(it["prompt"])], tok.encode(it["continuation"]))
            for it in self.evalset
        ]

    @cached_property
    def workload(self) -> EngineWorkload:
        """The engine level's workload (``[engine] workload``), parsed."""
        return parse_workload(self.preset.engine.workload)

    @cached_property
    def workload_tokens(self) -> list[tuple[list[int], list[int]]]:
        """(BOS + prompt ids, reference continuation ids) of the engine workload's items.

        ``eval`` is :attr:`eval_tokens` itself; the other workloads give at most
        ``[engine] prompts`` items (effbench.suite.engine_workloads).
        """
        if self.workload.kind == "eval":
            return self.eval_tokens
        return workload_items(self.workload, self.tokenizer, self.preset.engine.prompts)

    def timing_options(self) -> dict[str, Any]:
        r = self.preset.run
        return {
            "device": str(self.device),
            "target_rel_ci": r.target_rel_ci,
            "budget_s": r.case_budget_s,
            "warmup_s": r.warmup_s,
            "cold_cache": r.cold_cache,
        }


def load_model(name: str, device: torch.device, dtype: torch.dtype, seed: int):
    """A checkpoint by embedded name or path, or random weights for a known real shape."""
    if name in KNOWN_CONFIGS:
        return random_model(name, seed=seed, dtype=dtype, device=device)
    model, tok = load_checkpoint(resolve_model(name), device, dtype)
    return model.eval(), tok


def check_workload(ctx: RunContext) -> None:
    """Fail fast (ValueError, one line) when the engine workload outruns the model's positions,
    or a retrieval item cannot fit its length. Reads the model's config and tokenizer only,
    never its weights.
    """
    name, e = ctx.preset.run.model, ctx.preset.engine
    check_fits(ctx.workload, ctx.model_config.max_position_embeddings, e.max_new_tokens, name)
    if ctx.workload.kind == "retrieval":
        # the target's tokenizer, or the embedded one it borrows (as RunContext.tokenizer)
        path = resolve_model("tiny-target" if name in KNOWN_CONFIGS else name)
        if not (path / "tokenizer.json").is_file():
            path = resolve_model("tiny-target")
        workload_items(ctx.workload, Tokenizer.from_dir(path), 1)


def check_model(name: str) -> None:
    """Fail fast (ValueError, one line) when ``name`` is neither a known shape nor a checkpoint."""
    if name not in KNOWN_CONFIGS:
        read_config(resolve_model(name))


def check_same_tokenizer(target: str, draft: str) -> None:
    """Fail fast (ValueError, one line) when a draft model does not share the target's
    tokenizer: its token ids would mean other strings, and every draft would be rejected or,
    worse, accepted for the wrong text. Checkpoints compare their ``tokenizer.json``; a
    random-weights shape (no tokenizer) is checked by vocabulary size only.
    """
    def vocab_and_tokenizer(name: str) -> tuple[int, bytes | None]:
        if name in KNOWN_CONFIGS:
            return int(KNOWN_CONFIGS[name]["vocab_size"]), None
        path = resolve_model(name)
        tok = path / "tokenizer.json"
        return int(read_config(path)["vocab_size"]), tok.read_bytes() if tok.is_file() else None

    (tv, tt), (dv, dt) = vocab_and_tokenizer(target), vocab_and_tokenizer(draft)
    if tv != dv:
        raise ValueError(f"draft {draft!r} has a vocabulary of {dv} tokens, the target "
                         f"{target!r} {tv}: a draft must share the target's tokenizer")
    if tt is not None and dt is not None and tt != dt:
        raise ValueError(f"draft {draft!r} has a different tokenizer.json from the target "
                         f"{target!r}: a draft must share the target's tokenizer")

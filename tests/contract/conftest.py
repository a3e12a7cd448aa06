"""Shared fixtures of the family contracts: the embedded tiny models and eval prompts, loaded
once per session (the scheduling and decoding contracts both run the real engine on them).
"""

from __future__ import annotations

import pytest

from effbench.kernels_ref.checkpoint import load_checkpoint, resolve_model
from effbench.kernels_ref.evalset import load_evalset

N_PROMPTS = 8


@pytest.fixture(scope="session")
def tiny_target():
    """(model, tokenizer) of the embedded tiny target, float32 on the CPU."""
    model, tok = load_checkpoint(resolve_model("tiny-target"))
    return model.eval(), tok


@pytest.fixture(scope="session")
def tiny_draft():
    model, _ = load_checkpoint(resolve_model("tiny-draft"))
    return model.eval()


@pytest.fixture(scope="session")
def eval_prompts(tiny_target):
    """BOS + prompt ids of the first eval items, tokenized as suite/context.py does."""
    _, tok = tiny_target
    items = load_evalset()[:N_PROMPTS]
    assert len(items) == N_PROMPTS
    return [[tok.bos_id, *tok.encode(it["prompt"])] for it in items]

"""Train a draft that pays: one decoder layer distilled from the tiny target.

Why: on a CPU the cost of a decode step is mostly per-operator overhead, which grows with the
number of layers, not their width. The original 3-layer draft therefore costs about 70% of the
4-layer target per token and speculative decoding cannot pay. A single layer of the target's
width costs a fraction of that, and starting it from the target's own embedding, first layer
and final norm, then distilling it on the target's output distribution (forward KL, T = 1),
gives it the acceptance rate a smaller independently trained model does not reach.

``distill_draft`` is the pure training loop; ``train_draft_stage`` is the pipeline stage that
``effbench train-tiny`` runs after the target (it writes ``checkpoints/tiny-draft-1l``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from effbench.kernels_ref import corpus, evalset
from effbench.kernels_ref.checkpoint import load_checkpoint, save_checkpoint
from effbench.kernels_ref.model import LlamaConfig, LlamaModel
from effbench.kernels_ref.train import (
    Log,
    _optimizer,
    autocast,
    lr_at,
    optimizer_step,
    sample_batch,
    token_stream,
)


@dataclass(frozen=True)
class DraftRecipe:
    """How the 1-layer draft is made from a target: which layers it keeps, and the schedule."""

    keep_layers: int = 1
    steps: int = 600
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 1e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 2


DEFAULT_DRAFT_RECIPE = DraftRecipe()
QUICK_DRAFT_RECIPE = DraftRecipe(steps=3, batch_size=2, seq_len=32, warmup_steps=1)


def draft_from_target(target: LlamaModel, keep_layers: int) -> LlamaModel:
    """A shallower copy of ``target``: its embedding, first ``keep_layers`` layers and norm."""
    if not 1 <= keep_layers < target.config.num_hidden_layers:
        raise ValueError(
            f"keep_layers must be in [1, {target.config.num_hidden_layers - 1}], got {keep_layers}"
        )
    cfg: LlamaConfig = replace(target.config, num_hidden_layers=keep_layers)
    draft = LlamaModel(cfg)
    state = {
        k: v.detach().float().clone()
        for k, v in target.state_dict().items()
        if not k.startswith("layers.") or int(k.split(".")[1]) < keep_layers
    }
    draft.load_state_dict(state, strict=False)
    if cfg.tie_word_embeddings:
        draft.lm_head.weight = draft.embed_tokens.weight
    return draft


def distill_draft(
    target: LlamaModel,
    stream: torch.Tensor,
    bos_id: int,
    recipe: DraftRecipe = DEFAULT_DRAFT_RECIPE,
    log: Log = print,
    name: str = "tiny-draft-1l",
) -> tuple[LlamaModel, dict]:
    """Distil a ``keep_layers``-layer draft on ``target``'s next-token distributions."""
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    target = target.float().eval()
    draft = draft_from_target(target, recipe.keep_layers).train()
    opt = _optimizer(draft, recipe.lr, recipe.weight_decay)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(recipe.steps):
        lr = lr_at(step, recipe.steps, recipe.lr, recipe.warmup_steps, recipe.min_lr_ratio)
        inputs, _ = sample_batch(stream, recipe.batch_size, recipe.seq_len, bos_id, gen)
        with torch.no_grad(), autocast("cpu"):
            teacher = F.log_softmax(target(inputs).float(), dim=-1)
        with autocast("cpu"):
            logits = draft(inputs)
        student = F.log_softmax(logits.float(), dim=-1)
        loss = F.kl_div(student.flatten(0, 1), teacher.flatten(0, 1), log_target=True,
                        reduction="batchmean")  # fmt: skip
        optimizer_step(opt, draft, loss, lr, recipe.grad_clip)
        losses.append(loss.item())
        if step % 50 == 0 or step == recipe.steps - 1:
            log(f"[{name}] step {step + 1}/{recipe.steps} kl {loss.item():.3f} lr {lr:.2e} "
                f"{time.perf_counter() - t0:.0f}s")  # fmt: skip
    draft.eval()
    tail = losses[-min(20, len(losses)) :]
    return draft, {
        "train_seconds": round(time.perf_counter() - t0, 1),
        "steps": recipe.steps,
        "tokens_seen": recipe.steps * recipe.batch_size * recipe.seq_len,
        "final_train_kl": round(sum(tail) / len(tail), 4),
    }


def train_draft_stage(
    target_dir: Path, out_dir: Path, recipe: DraftRecipe = DEFAULT_DRAFT_RECIPE,
    max_train_files: int | None = None, eval_items: int | None = None, log: Log = print,
    eval_path: Path | None = None,
) -> dict:  # fmt: skip
    """Distil the draft from the checkpoint at ``target_dir``; write it under ``out_dir``.

    Measured into the model card: training time, held-out figures, and the greedy acceptance
    rate against the target alongside the original draft's when it sits next to the target.
    """
    target, tok = load_checkpoint(target_dir)
    if tok is None:
        raise ValueError(f"{target_dir} has no tokenizer.json; the draft must share it")
    train_docs, heldout_docs = corpus.split_documents(corpus.load_documents())
    if max_train_files is not None:
        train_docs = train_docs[:max_train_files]
        heldout_docs = heldout_docs[: max(4, max_train_files // 10)]
    stream = token_stream(tok, train_docs)
    heldout = token_stream(tok, heldout_docs)[:131072]
    items = evalset.load_evalset(eval_path)[:eval_items]
    draft, stats = distill_draft(target, stream, tok.bos_id, recipe, log)
    path = save_checkpoint(draft, Path(out_dir) / "tiny-draft-1l", target_dir)
    shipped, _ = load_checkpoint(path)
    metrics = {
        "parameters": shipped.config.num_parameters(),
        **stats,
        "eval_perplexity": round(evalset.continuation_perplexity(shipped, tok, items), 3),
        "heldout_stream_perplexity": round(
            evalset.stream_perplexity(shipped, heldout, tok.bos_id, recipe.seq_len), 3
        ),
        "greedy_acceptance_vs_target": round(
            evalset.greedy_acceptance(target, shipped, tok, items), 4
        ),
        "machine_threads": torch.get_num_threads(),
    }
    (path / "README.md").write_text(draft_card(recipe, metrics))
    log(f"[tiny-draft-1l] {metrics}")
    return metrics


def draft_card(recipe: DraftRecipe, metrics: dict) -> str:
    """Markdown model card of the distilled draft."""
    lines = [
        "# tiny-draft-1l",
        "",
        "A one-layer draft for `tiny-target`, made to pay for itself in speculative decoding on "
        "a CPU: the target's embedding, first decoder layer and final norm, then distilled on "
        "the target's next-token distributions (forward KL, temperature 1) over the training "
        "split of the stdlib corpus. Same tokenizer and width as the target; per-token cost "
        "is measured against the target's in `docs/WORKLOADS.md`. Reproduce with "
        "`effbench train-tiny --stage draft-1l`.",
        "",
        "## Measured",
        "",
        "| figure | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in metrics.items()],
        "",
        "*Greedy acceptance rate against the target*: the target greedily continues each of the "
        "64 eval prompts by 64 tokens; the draft reads the same prefix teacher-forced, and the "
        "rate is the fraction of positions where its argmax equals the target's token.",
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps(asdict(recipe), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)

"""Train ``tiny-long``: the tiny target extended to a 2048-token context that it actually uses.

Why: the original target saw 256-token windows only, so any technique that drops tokens older
than 256 costs it nothing and looks lossless. This stage continues training the target (same
width, depth and tokenizer: what it learned at 256 is kept, and CPU minutes go to length) in
phases of growing row length (512, 1024, then 2048 tokens in the shipped recipe), as
long-context recipes do. The rows mix four kinds:

* plain windows of the stdlib stream (code has long-range structure: names defined at the top
  of a module are used far below);
* *repeats*: a chunk of code, other code, then the same chunk again, so copying stays in use
  at every distance;
* synthetic retrieval items (:mod:`effbench.kernels_ref.retrieval`, built from training files,
  so the held-out grid never shares a haystack with them) followed by more stream;
* the warm-up's random copies (below) at long range (``copy_fraction``).

The loss on the tokens only copying can predict (the answers, the second copies) is an extra
term, logged as training goes. Copying itself needs a circuit the shipped target lacks (top-1
0.0 on the second copy of a repeated random sequence: no induction head after 500 steps), and
none of the rows above builds one within this budget (tried for a few hundred steps each:
repeated random sequences alone, periodic sequences, repeated code, a fresh 2-layer model). So
:func:`induction_warmup` comes first: random tokens, some code, the same tokens again, inside
code, with the loss on the second copy plus a plain LM term. A GPU sweep of eight such recipes
(results/gpu/induction_sweep_twice.jsonl is the one that worked) found this one forms the
circuit as a phase change between steps 800 and 1000; without the LM term, at a learning rate
of 5e-3, or with batches of 8 it did not form in 2500 steps. On this CPU it does the same (copy
top-1 0.001 at step 800, 0.90 at step 1000).

The circuit is fragile at first: long phases that start at 2048 tokens erase it within 100
steps, on a CPU and on the GPU (copy top-1 0.94 to 0.14), with or without random copies
among the rows, at a lower learning rate without weight decay, or with half the rows copies
(results/gpu/long_*.json; :data:`LONG_PHASES_RECIPE`, which shipped until 2026-12-08, uses
distant context but retrieves nothing: results/long_phases/). Growing the rows from 512 tokens
with copies among them keeps it (:data:`CURRICULUM_LONG_RECIPE`, copy top-1 0.71), but with
only 150 steps at 2048 tokens its full attention lost to a 256-token window past 1024 tokens
(results/long_curriculum/). What ships (:data:`DEFAULT_LONG_RECIPE`) is that curriculum with
450 steps at 2048 tokens: held-out perplexity at 2048 of 17.03 with full attention against
17.77 with the window, copy top-1 0.50, and the needle found at 512 and 1024 tokens (0.60 and
0.55 exact with full attention, 0.35 and 0.15 with the window). It never sees rows longer than
2048 tokens, so past 2048 positions it degrades (perplexity 28.9 at 4096).

``continue_long`` is the training loop; ``train_long_stage`` the pipeline stage that loads the
target, trains, evaluates (:mod:`effbench.kernels_ref.long_eval`) and writes the checkpoint.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from effbench.kernels_ref import corpus, evalset, long_evalset, long_figures
from effbench.kernels_ref.checkpoint import load_checkpoint, save_checkpoint
from effbench.kernels_ref.model import LlamaModel
from effbench.kernels_ref.retrieval import TASKS, Haystack, RetrievalSpec, make_item
from effbench.kernels_ref.train import (
    Log,
    _optimizer,
    autocast,
    lr_at,
    optimizer_step,
    precision,
    sample_batch,
    token_stream,
)


@dataclass(frozen=True)
class LongRecipe:
    """Phases (row length, batch, steps), the retrieval share, and the optimiser schedule."""

    phases: tuple[tuple[int, int, int], ...] = ((2048, 2, 450), (4096, 1, 200))
    positions: int = 4096  # RoPE table and max_position_embeddings (at least the longest phase)
    retrieval_fraction: float = 0.25
    repeat_fraction: float = 0.25
    copy_fraction: float = 0.0  # random copies at long range (0.2 in the curriculum below)
    answer_loss_weight: float = 1.0
    lr: float = 1e-3
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 3
    max_train_files: int | None = None
    # induction warm-up before the long phases: (steps, batch, row length, learning rate,
    # LM rows of 256 tokens per step); see induction_warmup
    induction: tuple[int, int, int, float, int] = (1000, 32, 96, 2e-3, 4)

    @property
    def max_positions(self) -> int:
        return max(self.positions, *(p[0] for p in self.phases))

    @property
    def steps(self) -> int:
        return sum(p[2] for p in self.phases)


# Long phases straight after the warm-up: uses distant context, erases copying (module
# docstring; shipped until 2026-12-08, its card in results/long_phases/).
LONG_PHASES_RECIPE = LongRecipe()
# The curriculum that keeps the copy circuit (and retrieves) but, with only 150 steps at 2048,
# loses the long-context LM gain past 1024 tokens; measured, not shipped (results/long_curriculum).
CURRICULUM_LONG_RECIPE = LongRecipe(
    phases=((512, 8, 300), (1024, 4, 200), (2048, 2, 150)), retrieval_fraction=0.3,
    repeat_fraction=0.2, copy_fraction=0.2, lr=5e-4, induction=(1200, 32, 96, 2e-3, 4),
)
# What ships: the curriculum with three times the 2048-token steps, which both copies and
# gains from 2048 tokens of context (kernels_ref/checkpoints/tiny-long/README.md).
DEFAULT_LONG_RECIPE = replace(
    CURRICULUM_LONG_RECIPE, phases=((512, 8, 300), (1024, 4, 200), (2048, 2, 450)),
    induction=(1000, 32, 96, 2e-3, 4),
)
QUICK_LONG_RECIPE = LongRecipe(
    phases=((128, 2, 2), (256, 1, 2)), max_train_files=30, induction=(2, 2, 48, 2e-3, 1),
    positions=256,
)
_MIN_REPEAT, _MAX_REPEAT = 16, 128  # tokens in a repeated chunk


def _training_row(
    stream: torch.Tensor, hay: Haystack, seq_len: int, rng: random.Random,
    recipe: LongRecipe, gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(inputs, targets, answer mask) of one row: a stream window, or an item then stream."""
    tok = hay.tok
    start = int(torch.randint(0, stream.numel() - seq_len, (1,), generator=gen))
    window = stream[start : start + seq_len]
    answer = torch.zeros(seq_len, dtype=torch.bool)
    draw = rng.random()
    if draw < recipe.repeat_fraction and seq_len >= 4 * _MIN_REPEAT:
        # a chunk of code, other code, then the chunk again: its second copy is predictable
        # only by copying from the first (a signal for copying, when the model can copy)
        m = rng.randint(_MIN_REPEAT, min(_MAX_REPEAT, seq_len // 4))
        gap = rng.randint(0, seq_len - 2 * m - 1)
        s2 = int(torch.randint(0, stream.numel() - m, (1,), generator=gen))
        chunk = stream[s2 : s2 + m]
        lead = rng.randint(0, seq_len - 2 * m - gap)
        targets = torch.cat([window[:lead], chunk, window[lead : lead + gap], chunk,
                             window[lead + gap :]])[:seq_len]  # fmt: skip
        second = lead + m + gap
        answer[second + 1 : second + m] = True
    elif draw >= recipe.repeat_fraction + recipe.retrieval_fraction + recipe.copy_fraction:
        targets = window
    elif draw >= recipe.repeat_fraction + recipe.retrieval_fraction:
        # the warm-up's random copy, now at long range: keeps the induction head in use
        targets, answer = _copy_row(stream, seq_len, tok.vocab_size, gen, max_tokens=64)
    else:
        task = rng.choice(TASKS)
        spec = RetrievalSpec(
            task=task,
            length=rng.randint(min(96, seq_len // 2), seq_len - 16),
            depth=rng.random(),
            needles=rng.randint(2, 4) if task == "multi-needle" else 1,
            distractors=rng.choice((0, 0, 1, 2, 3)),
            seed=rng.randrange(1 << 30),
        )
        try:
            item = make_item(spec, 0, hay)
        except ValueError:  # needles longer than a short row: use plain text instead
            plain = replace(recipe, retrieval_fraction=0, repeat_fraction=0, copy_fraction=0)
            return _training_row(stream, hay, seq_len, rng, plain, gen)
        seq = [*item.prompt_ids[1:], *item.answer_ids, tok.eos_id]
        a0 = len(item.prompt_ids) - 1
        answer[a0 : a0 + len(item.answer_ids)] = True
        targets = torch.tensor(seq[:seq_len] + window[: max(0, seq_len - len(seq))].tolist())
    inputs = torch.cat([torch.tensor([tok.bos_id]), targets[:-1]])
    return inputs, targets, answer


def _copy_row(
    stream: torch.Tensor, length: int, vocab: int, gen: torch.Generator, max_tokens: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(targets, copy mask): random tokens, a gap of code, the same tokens again, in code.

    The random tokens cannot be predicted from statistics, only by finding their first copy
    and reading what followed it: the gradient signal that builds an induction head. The run
    is 8 to ``length // 2 - 5`` tokens long, at most ``max_tokens`` when given.
    """
    top = length // 2 - 4 if not max_tokens else min(length // 2 - 4, max_tokens + 1)
    n = int(torch.randint(8, top, (1,), generator=gen))
    gap = int(torch.randint(0, length - 2 * n + 1, (1,), generator=gen))
    seq = torch.randint(3, vocab, (n,), generator=gen)
    start = int(torch.randint(0, stream.numel() - length, (1,), generator=gen))
    fill = stream[start : start + length]
    lead = int(torch.randint(0, length - 2 * n - gap + 1, (1,), generator=gen))
    targets = torch.cat([fill[:lead], seq, fill[lead : lead + gap], seq, fill[lead + gap :]])
    mask = torch.zeros(length, dtype=torch.bool)
    second = lead + n + gap
    mask[second + 1 : second + n] = True
    return targets[:length], mask


@torch.no_grad()
def copy_accuracy(model: LlamaModel, vocab: int, rows: int = 64, n: int = 32) -> float:
    """Top-1 accuracy on the second copy of ``rows`` repeated random ``n``-token sequences.

    Near 0 without an induction head (the tokens are random), near 1 with one.
    """
    gen = torch.Generator().manual_seed(99)
    seqs = torch.randint(3, vocab, (rows, n), generator=gen)
    ids = torch.cat([torch.ones(rows, 1, dtype=torch.long), seqs, seqs], dim=1)
    was_training = model.training
    model.eval()
    ids = ids.to(model.device)
    with autocast(model.device):
        logits = model(ids[:, :-1]).float()
    model.train(was_training)
    pred = logits[:, n + 1 :].argmax(-1)
    return round((pred == ids[:, n + 2 :]).float().mean().item(), 4)


def induction_warmup(
    model: LlamaModel, stream: torch.Tensor, bos_id: int, recipe: LongRecipe, log: Log = print
) -> tuple[LlamaModel, dict]:
    """Train the copy circuit (an induction head) before the long phases; return statistics.

    Rows are :func:`_copy_row` (the loss on the second copy only) plus a few plain windows of
    code (their LM loss keeps the model a code model; without them the copy loss did not move
    in 4000 steps of the sweep). The circuit forms as a phase change: on the GPU sweep behind
    this recipe the copy accuracy stayed near 0 for 800 steps and passed 0.88 by step 1000. A
    constant learning rate, as in that sweep (5e-3 never formed it; 2e-3 did).
    """
    steps, batch, length, lr, lm_batch = recipe.induction
    dev = model.device
    gen = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    opt = _optimizer(model, lr, 0.0)
    model.train()
    t0 = time.perf_counter()
    curve = [{"step": 0, "copy_top1": copy_accuracy(model, vocab), "seconds": 0.0}]
    for step in range(1, steps + 1):
        rows = [_copy_row(stream, length, vocab, gen) for _ in range(batch)]
        targets, mask = (torch.stack(t).to(dev) for t in zip(*rows))
        inputs = torch.cat([torch.full((batch, 1), bos_id, device=dev), targets[:, :-1]], dim=1)
        with autocast(dev):
            logits = model(inputs)
        per_tok = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                  reduction="none")  # fmt: skip
        loss = per_tok[mask.flatten()].mean()
        if lm_batch:
            lm_in, lm_out = (t.to(dev) for t in sample_batch(stream, lm_batch, 256, bos_id, gen))
            with autocast(dev):
                lm_logits = model(lm_in)
            loss = loss + F.cross_entropy(lm_logits.float().flatten(0, 1), lm_out.flatten())
        optimizer_step(opt, model, loss, lr, recipe.grad_clip)
        if step % 100 == 0 or step == steps:
            elapsed = round(time.perf_counter() - t0, 1)
            curve.append({"step": step, "copy_top1": copy_accuracy(model, vocab),
                          "loss": round(loss.item(), 4), "seconds": elapsed})  # fmt: skip
            log(f"[tiny-long] induction step {step}/{steps} copy top-1 "
                f"{curve[-1]['copy_top1']} loss {loss.item():.3f} {elapsed:.0f}s")  # fmt: skip
    return model, {
        "induction_seconds": round(time.perf_counter() - t0, 1),
        "induction_curve": curve,
        "copy_top1_before": curve[0]["copy_top1"],
        "copy_top1_after": curve[-1]["copy_top1"],
    }


def continue_long(
    model: LlamaModel, stream: torch.Tensor, hay: Haystack, recipe: LongRecipe, log: Log = print
) -> tuple[LlamaModel, dict]:
    """Continue training ``model`` through the recipe's phases; return it and statistics.

    Rows are built on the CPU and trained on ``model``'s device (the recipe was tuned on a GPU
    and ships trained on the CPU).
    """
    dev = model.device
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    model.train()
    opt = _optimizer(model, recipe.lr, recipe.weight_decay)
    t0 = time.perf_counter()
    step, log_rows = 0, []
    lm_hist: list[float] = []
    ans_hist: list[float] = []
    for seq_len, batch, steps in recipe.phases:
        for _ in range(steps):
            lr = lr_at(step, recipe.steps, recipe.lr, recipe.warmup_steps, recipe.min_lr_ratio)
            rows = [_training_row(stream, hay, seq_len, rng, recipe, gen) for _ in range(batch)]
            inputs, targets, answer = (torch.stack(t).to(dev) for t in zip(*rows))
            with autocast(dev):
                logits = model(inputs)
            per_tok = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(),
                                      reduction="none")  # fmt: skip
            lm = per_tok.mean()
            mask = answer.flatten()
            ans = per_tok[mask].mean() if mask.any() else per_tok.new_zeros(())
            loss = lm + recipe.answer_loss_weight * ans
            optimizer_step(opt, model, loss, lr, recipe.grad_clip)
            lm_hist.append(lm.item())
            if mask.any():
                ans_hist.append(ans.item())
            step += 1
            if step % 25 == 0 or step == recipe.steps:
                lm_avg = sum(lm_hist[-25:]) / len(lm_hist[-25:])
                ans_avg = sum(ans_hist[-25:]) / max(1, len(ans_hist[-25:]))
                elapsed = time.perf_counter() - t0
                row = {"step": step, "seq_len": seq_len, "lm_loss": round(lm_avg, 4),
                       "answer_loss": round(ans_avg, 4), "seconds": round(elapsed, 1)}
                if step % 100 == 0 or step == recipe.steps:  # is the copy circuit still there?
                    row["copy_top1"] = copy_accuracy(model, model.config.vocab_size)
                log_rows.append(row)
                log(f"[tiny-long] step {step}/{recipe.steps} len {seq_len} lm {lm_avg:.3f} "
                    f"answer {ans_avg:.3f} copy {row.get('copy_top1', '-')} lr {lr:.2e} "
                    f"{elapsed:.0f}s")  # fmt: skip
    model.eval()
    return model, {
        "train_seconds": round(time.perf_counter() - t0, 1),
        "steps": recipe.steps,
        "tokens_seen": sum(s * b * n for s, b, n in recipe.phases),
        "final_lm_loss": log_rows[-1]["lm_loss"] if log_rows else None,
        "final_answer_loss": log_rows[-1]["answer_loss"] if log_rows else None,
        "loss_log": log_rows,
    }


def extend_positions(model: LlamaModel, max_positions: int) -> LlamaModel:
    """A float32 copy of ``model`` whose config and RoPE table cover ``max_positions``."""
    cfg = replace(model.config, max_position_embeddings=max_positions)
    out = LlamaModel(cfg)
    out.load_state_dict({k: v.float() for k, v in model.state_dict().items()}, strict=False)
    if cfg.tie_word_embeddings:
        out.lm_head.weight = out.embed_tokens.weight
    return out


def train_long_stage(
    target_dir: Path, out_dir: Path, recipe: LongRecipe = DEFAULT_LONG_RECIPE, log: Log = print,
    grid_items: int = 8, eval_path: Path | None = None,
) -> dict:  # fmt: skip
    """The ``tiny-long`` stage: long eval set, training from the target, figures, model card.

    Writes ``OUT/data/long_eval.jsonl`` and ``OUT/checkpoints/tiny-long/`` (weights, card,
    ``figures.json``, ``per_position_loss.svg``, ``training_log.json``); returns the summary.
    """
    target, tok = load_checkpoint(target_dir)
    if tok is None:
        raise ValueError(f"{target_dir} has no tokenizer.json")
    train_docs, heldout_docs = corpus.split_documents(corpus.load_documents())
    if recipe.max_train_files is not None:
        train_docs = train_docs[: recipe.max_train_files]
    items = long_evalset.build_long_evalset(heldout_docs, tok)
    long_evalset.write_long_evalset(items, Path(out_dir) / "data" / "long_eval.jsonl")
    stream = token_stream(tok, train_docs)
    model = extend_positions(target, recipe.max_positions)
    model, warm = induction_warmup(model, stream, tok.bos_id, recipe, log)
    model, stats = continue_long(model, stream, Haystack(tok, stream), recipe, log)
    stats = {
        **stats,
        **warm,
        "copy_top1_final": copy_accuracy(model, model.config.vocab_size),
        "train_seconds": round(stats["train_seconds"] + warm["induction_seconds"], 1),
        "precision": precision(model.device),
    }
    path = save_checkpoint(model, Path(out_dir) / "checkpoints" / "tiny-long", target_dir)
    (path / "training_log.json").write_text(
        json.dumps({"recipe": asdict(recipe), **stats}, indent=2) + "\n"
    )
    shipped, _ = load_checkpoint(path)  # evaluate what ships (bf16 weights)
    figures = write_long_card(
        path, shipped, target, tok, items, recipe, stats, grid_items, log, eval_path
    )
    return {**{k: v for k, v in stats.items() if k != "loss_log"}, **figures["headline"]}


def write_long_card(
    path: Path, model: LlamaModel, target: LlamaModel, tok, items: list[dict],
    recipe: LongRecipe, stats: dict, grid_items: int = 8, log: Log = print,
    eval_path: Path | None = None,
) -> dict:  # fmt: skip
    """Measure ``model`` (and the short target for reference); write figures and the card."""
    figs = long_figures.evaluate_long(model, tok, items, grid_items=grid_items, log=log)
    ref_len = min(target.config.max_position_embeddings, max(figs["lengths"], default=0))
    ref = {}
    if str(ref_len) in figs["perplexity"]:
        ref = {m: long_figures.long_perplexity(target, items, tok, ref_len, w)
               for m, w in (("full", None), ("window256", 256))}  # fmt: skip
    short_items = evalset.load_evalset(eval_path)
    figs["eval_perplexity"] = round(evalset.continuation_perplexity(model, tok, short_items), 3)
    figs["target_eval_perplexity"] = round(
        evalset.continuation_perplexity(target, tok, short_items), 3
    )
    figs["target_reference"] = {"length": ref_len, **ref}
    ppl2k = figs["perplexity"].get("2048", {})
    needle = [r for r in figs["retrieval"] if r["task"] == "needle"]
    figs["headline"] = {
        "perplexity_2048_full": ppl2k.get("full", {}).get("perplexity"),
        "perplexity_2048_window256": ppl2k.get("window256", {}).get("perplexity"),
        "needle_exact_full": _mean(r["exact"] for r in needle if r["mode"] == "full"),
        "needle_exact_window256": _mean(r["exact"] for r in needle if r["mode"] == "window256"),
        "eval_perplexity": figs["eval_perplexity"],
    }
    (path / "figures.json").write_text(json.dumps(figs, indent=2) + "\n")
    if figs["per_position"]:
        (path / "per_position_loss.svg").write_text(long_figures.loss_curve_svg(
            {"full attention": figs["per_position"]["full"],
             "last 256 tokens only": figs["per_position"]["window256"]}))  # fmt: skip
    (path / "README.md").write_text(long_card(recipe, stats, figs, model))
    log(f"[tiny-long] {figs['headline']}")
    return figs


def _mean(values) -> float | None:
    vals = list(values)
    return round(sum(vals) / len(vals), 4) if vals else None


def _trained_note(recipe: LongRecipe, positions: int) -> str:
    longest = max(n for n, _, _ in recipe.phases)
    return (f" (rows of at most {longest} tokens in training: the tables below show what "
            f"happens past them)" if longest < positions else "")


def long_card(recipe: LongRecipe, stats: dict, figs: dict, model: LlamaModel) -> str:
    """Markdown model card of tiny-long with every figure and the recipe."""
    cfg = model.config
    phases = ", ".join(f"{n} steps of {b} x {s} tokens" for s, b, n in recipe.phases)
    ind = recipe.induction
    fractions = {"repeat": recipe.repeat_fraction, "retrieval": recipe.retrieval_fraction,
                 "copy": recipe.copy_fraction}  # fmt: skip
    fractions["plain"] = 1 - sum(fractions.values())

    def share(kind: str) -> str:
        return f"{fractions[kind]:.0%}"

    lines = [
        "# tiny-long",
        "",
        "The embedded tiny target extended to a long context, so that techniques which drop "
        "distant tokens have something to lose. Same architecture, width, depth and tokenizer "
        f"as `tiny-target` ({cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
        f"{cfg.num_parameters()} parameters), `max_position_embeddings` "
        f"{cfg.max_position_embeddings}{_trained_note(recipe, cfg.max_position_embeddings)}. "
        f"Continued from tiny-target's weights: first an induction warm-up of {ind[0]} steps "
        f"({ind[1]} rows of {ind[2]} tokens: random tokens repeated inside code, loss on the "
        "second copy, plus an LM term), which builds the copy circuit the target lacks; then "
        f"{phases} (the context grows phase by phase); of the rows, {share('plain')} plain "
        f"stdlib text, {share('repeat')} repeated code chunks, {share('retrieval')} synthetic "
        f"retrieval items built from training files and {share('copy')} random copies, with "
        "the copied tokens' loss as an extra term. Traded: no extra width "
        "or depth (per-token cost equals the target's), CPU minutes spent on copying and length "
        "instead of more short-context steps. Reproduce with `effbench train-tiny --stage long`.",
        "",
        "## Measured",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| train_seconds (1 thread; induction warm-up included) | {stats['train_seconds']} |",
        f"| training precision | {stats.get('precision', 'bf16 autocast')} |",
        f"| induction warm-up seconds | {stats.get('induction_seconds')} |",
        "| copy top-1 (2nd copy of 64 repeated random 32-token sequences): target / after "
        f"warm-up / shipped | {stats.get('copy_top1_before')} / {stats.get('copy_top1_after')} "
        f"/ {stats.get('copy_top1_final')} |",
        f"| tokens_seen | {stats['tokens_seen']} |",
        f"| final LM loss / answer loss (last 25 steps) | {stats['final_lm_loss']} / "
        f"{stats['final_answer_loss']} |",
        f"| eval.jsonl perplexity (short prompts) | {figs['eval_perplexity']} "
        f"(tiny-target: {figs['target_eval_perplexity']}) |",
        "",
        "Copy top-1 during the induction warm-up (step: top-1), the phase change: "
        + ", ".join(f"{p['step']}: {p['copy_top1']}" for p in stats.get("induction_curve", []))
        + ".",
        "",
        "Perplexity and top-1 accuracy of the same 64-token continuations of 16 held-out files "
        "(`data/long_eval.jsonl`), by total sequence length, with full attention and with each "
        f"query restricted to the last {figs['window']} tokens:",
        "",
        "| length | full: ppl | full: top-1 | window: ppl | window: top-1 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for n, row in figs["perplexity"].items():
        f, w = row["full"], row[f"window{figs['window']}"]
        lines.append(f"| {n} | {f['perplexity']} | {f['top1']} | {w['perplexity']} | {w['top1']} |")
    ref = figs.get("target_reference", {})
    if "full" in ref:
        lines += ["", f"For reference, tiny-target (trained on 256-token windows) at "
                  f"{ref['length']}: full {ref['full']['perplexity']}, window 256 "
                  f"{ref['window256']['perplexity']}."]  # fmt: skip
    lines += [
        "",
        "Per-position loss at the longest length (mean over the 16 files, buckets of 128 "
        f"positions), full attention against the last {figs['window']} tokens only:",
        "",
        "![per-position loss](per_position_loss.svg)",
        "",
        "| position | " + " | ".join(figs["per_position"]) + " |",
        "|" + " --- |" * (1 + len(figs["per_position"])),
    ]
    curves = list(figs["per_position"].values())
    for i, p in enumerate(curves[0] if curves else []):
        lines.append(f"| {p['position']} | " + " | ".join(str(c[i]["loss"]) for c in curves) + " |")
    lines += [
        "",
        "Retrieval (exact match of the whole answer, 8 items per cell; haystack: the long eval "
        "set's held-out code; `effbench.kernels_ref.retrieval`):",
        "",
        *long_figures.retrieval_table(figs["retrieval"]),
        "",
        "## Recipe",
        "",
        "```json",
        json.dumps(asdict(recipe), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)

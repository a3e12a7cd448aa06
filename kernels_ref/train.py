"""Train the embedded tiny target and draft models on the stdlib corpus, on a CPU, in minutes.

Why: effbench's default workload must run offline on any machine, and speculative decoding
needs a target/draft pair that share a tokenizer and genuinely agree more often than chance.
``train_tiny`` runs the whole pipeline (tokenizer, eval set, target, draft, evaluation, model
cards) deterministically from a :class:`TinyRecipe`; ``main`` is the ``effbench train-tiny``
entry point. Output layout mirrors the package: ``OUT/checkpoints/tiny-{target,draft}`` and
``OUT/data/eval.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from effbench.kernels_ref import corpus, evalset
from effbench.kernels_ref.checkpoint import init_weights, load_checkpoint, save_checkpoint
from effbench.kernels_ref.model import LlamaConfig, LlamaModel
from effbench.kernels_ref.tokenizer import Tokenizer, train_bpe

Log = Callable[[str], None]



def bf16_fast(device: torch.device | str) -> bool:
    """Whether bf16 autocast is native here: CUDA, or a CPU with AVX512-BF16 or AMX tiles.

    Elsewhere torch emulates bf16 and training crawls: on an AVX2-only EPYC one 32 x 96-token
    step of the tiny model took 25 s under bf16 autocast against 1.1 s in float32.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return True
    return kind == "cpu" and bool(torch.cpu._is_avx512_bf16_supported()
                                  or torch.cpu._is_amx_tile_supported())  # fmt: skip


def autocast(device: torch.device | str, enabled: bool = True):
    """bf16 autocast for training where it is native (``bf16_fast``), else float32 (a no-op).

    The recipes were tuned with bf16 autocast; in float32 they train the same model up to
    rounding, at the speed the machine allows.
    """
    kind = torch.device(device).type
    return torch.autocast(kind, dtype=torch.bfloat16, enabled=enabled and bf16_fast(kind))


def precision(device: torch.device | str, enabled: bool = True) -> str:
    """What ``autocast`` trains in here, for training logs and model cards."""
    return "bf16 autocast" if enabled and bf16_fast(device) else "float32"

@dataclass(frozen=True)
class TinyRecipe:
    """Everything that determines the tiny models: shapes, data, optimisation, evaluation."""

    seed: int = 0
    vocab_size: int = 4096
    target: LlamaConfig = LlamaConfig(
        vocab_size=4096, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
    )  # fmt: skip
    draft: LlamaConfig = LlamaConfig(
        vocab_size=4096, hidden_size=96, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=3, num_key_value_heads=1, max_position_embeddings=1024,
    )  # fmt: skip
    seq_len: int = 256
    batch_size: int = 16
    target_steps: int = 500
    draft_steps: int = 500
    target_lr: float = 2e-3
    draft_lr: float = 3e-3
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bf16_autocast: bool = True
    threads: int = 1  # 2 threads collapse ~4x when another process holds a core
    init_std: float = 0.02
    eval_items: int = evalset.N_ITEMS
    prompt_tokens: int = evalset.PROMPT_TOKENS
    continuation_tokens: int = evalset.CONTINUATION_TOKENS
    heldout_eval_tokens: int = 131072
    max_train_files: int | None = None  # None: the whole corpus; set for quick runs


DEFAULT_RECIPE = TinyRecipe()

QUICK_RECIPE = TinyRecipe(
    vocab_size=512,
    target=LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    ),
    draft=LlamaConfig(
        vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
    ),
    seq_len=64, batch_size=4, target_steps=4, draft_steps=4, warmup_steps=2,
    eval_items=4, prompt_tokens=24, continuation_tokens=8, heldout_eval_tokens=2048,
    max_train_files=30,
)  # fmt: skip


# ----------------------------------------------------------------------------- data


def token_stream(tok: Tokenizer, docs: Sequence[corpus.Document]) -> torch.Tensor:
    """All documents' ids concatenated, each document followed by ``eos``."""
    ids: list[int] = []
    for doc_ids in tok.encode_batch([text for _, text in docs]):
        ids.extend(doc_ids)
        ids.append(tok.eos_id)
    return torch.tensor(ids, dtype=torch.long)


def sample_batch(
    stream: torch.Tensor, batch: int, seq_len: int, bos_id: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of the stream as (inputs, targets); every input row starts with ``bos``.

    Leading with ``bos`` at arbitrary offsets matches how prompts are scored and served.
    """
    starts = torch.randint(0, stream.numel() - seq_len, (batch,), generator=gen)
    targets = torch.stack([stream[s : s + seq_len] for s in starts.tolist()])
    inputs = torch.cat([torch.full_like(targets[:, :1], bos_id), targets[:, :-1]], dim=1)
    return inputs, targets


# ----------------------------------------------------------------------------- training


def lr_at(step: int, steps: int, peak: float, warmup: int, min_ratio: float) -> float:
    """Linear warmup to ``peak`` then cosine decay to ``min_ratio * peak`` at ``steps``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _optimizer(model: LlamaModel, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def optimizer_step(
    opt: torch.optim.Optimizer, model: torch.nn.Module, loss: torch.Tensor, lr: float,
    grad_clip: float,
) -> None:  # fmt: skip
    """One update of every tiny-model recipe: set the learning rate, backpropagate ``loss``,
    clip the gradient norm at ``grad_clip``, step.
    """
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()


def train_model(
    cfg: LlamaConfig,
    stream: torch.Tensor,
    recipe: TinyRecipe,
    steps: int,
    peak_lr: float,
    seed: int,
    bos_id: int,
    log: Log,
    name: str,
) -> tuple[LlamaModel, dict]:
    """Train one model from scratch as a causal LM; return it and its training statistics."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = LlamaModel(cfg)
    init_weights(model, recipe.init_std)
    model.train()
    opt = _optimizer(model, peak_lr, recipe.weight_decay)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(steps):
        lr = lr_at(step, steps, peak_lr, recipe.warmup_steps, recipe.min_lr_ratio)
        inputs, targets = sample_batch(stream, recipe.batch_size, recipe.seq_len, bos_id, gen)
        with autocast("cpu", recipe.bf16_autocast):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
        optimizer_step(opt, model, loss, lr, recipe.grad_clip)
        losses.append(loss.item())
        if step % 50 == 0 or step == steps - 1:
            elapsed = time.perf_counter() - t0
            log(f"[{name}] step {step + 1}/{steps} loss {loss.item():.3f} lr {lr:.2e} "
                f"{elapsed:.0f}s")  # fmt: skip
    model.eval()
    tail = losses[-min(20, len(losses)) :]
    stats = {
        "train_seconds": round(time.perf_counter() - t0, 1),
        "steps": steps,
        "tokens_seen": steps * recipe.batch_size * recipe.seq_len,
        "final_train_loss": round(sum(tail) / len(tail), 4),
    }
    return model, stats


# ----------------------------------------------------------------------------- cards


def model_card(name: str, role: str, recipe: TinyRecipe, metrics: dict) -> str:
    """Markdown model card: what the model is, the full recipe and the measured figures."""
    lines = [
        f"# {name}",
        "",
        f"The {role} of effbench's embedded tiny model pair: a Llama-architecture decoder "
        "(RMSNorm, RoPE, grouped-query attention, SwiGLU) trained from scratch by "
        "`effbench train-tiny` on the Python standard library's own source code (test "
        "directories excluded; about 5% of files held out, split by a hash of the path). "
        "It is a benchmarking workload, not a useful code model.",
        "",
        "Loads with `effbench.kernels_ref.checkpoint.load_checkpoint` and with "
        "`transformers.AutoModelForCausalLM` / `AutoTokenizer` (weights in bfloat16 "
        "safetensors; tokenizer: byte-level BPE, `<|pad|>`=0, `<|bos|>`=1, `<|eos|>`=2; no "
        "special tokens are added implicitly, prompts are scored as `[bos] + ids`).",
        "",
        "## Measured",
        "",
        "| figure | value |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in metrics.items()]
    lines += [
        "",
        "Definitions: *eval perplexity* is exp of the mean negative log-likelihood of the 64 "
        "`data/eval.jsonl` continuations (about 64 tokens each) given `[bos] + prompt` (about 96 "
        "tokens); *held-out stream perplexity* is over held-out files' token stream cut into "
        f"{recipe.seq_len}-token windows, each led by `[bos]`. Weights are evaluated after the "
        "bfloat16 round trip, as shipped.",
    ]
    if role == "draft":
        lines += [
            "",
            "*Greedy acceptance rate against the target*: for each eval prompt the target "
            "greedily generates 64 tokens; the draft then reads the same prefix (prompt plus "
            "the target's tokens, teacher-forced), and the rate is the fraction of those 64 "
            "positions, over all prompts, where the draft's argmax equals the target's token.",
        ]
    lines += ["", "## Recipe", "", "```json", json.dumps(_recipe_dict(recipe), indent=2), "```", ""]
    return "\n".join(lines)


def _recipe_dict(recipe: TinyRecipe) -> dict:
    d = asdict(recipe)
    d["optimizer"] = "AdamW(betas=(0.9, 0.95), eps=1e-8), decay on matrices only"
    d["schedule"] = "linear warmup then cosine to min_lr_ratio * peak"
    return d


# ----------------------------------------------------------------------------- pipeline


def train_tiny(out_dir: Path, recipe: TinyRecipe = DEFAULT_RECIPE, log: Log = print) -> dict:
    """Train tokenizer, eval set, target and draft; write checkpoints and cards; summarise."""
    threads_before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        return _train_tiny(Path(out_dir), recipe, log)
    finally:
        torch.set_num_threads(threads_before)


def _train_tiny(out_dir: Path, recipe: TinyRecipe, log: Log) -> dict:
    t_start = time.perf_counter()
    train_docs, heldout_docs = corpus.split_documents(corpus.load_documents())
    if recipe.max_train_files is not None:
        train_docs = train_docs[: recipe.max_train_files]
        heldout_docs = heldout_docs[: max(4, recipe.max_train_files // 10)]
    log(f"corpus: {len(train_docs)} train files, {len(heldout_docs)} held-out files")

    tok_dir = out_dir / "checkpoints" / "tokenizer"
    Tokenizer(train_bpe((t for _, t in train_docs), recipe.vocab_size)).save(tok_dir)
    tok = Tokenizer.from_dir(tok_dir)
    items = evalset.build_evalset(
        heldout_docs, tok, recipe.eval_items, recipe.prompt_tokens,
        recipe.continuation_tokens, recipe.seed,
    )  # fmt: skip
    eval_path = out_dir / "data" / "eval.jsonl"
    evalset.write_evalset(items, eval_path)
    train_stream = token_stream(tok, train_docs)
    heldout_stream = token_stream(tok, heldout_docs)[: recipe.heldout_eval_tokens]
    log(f"tokens: {train_stream.numel()} train, {heldout_stream.numel()} held-out (eval)")

    def evaluate(model: LlamaModel) -> dict:
        return {
            "eval_perplexity": round(evalset.continuation_perplexity(model, tok, items), 3),
            "heldout_stream_perplexity": round(
                evalset.stream_perplexity(model, heldout_stream, tok.bos_id, recipe.seq_len), 3
            ),
        }

    summary: dict = {"out_dir": str(out_dir)}
    paths, models = {}, {}
    for role, cfg, steps, lr, seed in (
        ("target", recipe.target, recipe.target_steps, recipe.target_lr, recipe.seed),
        ("draft", recipe.draft, recipe.draft_steps, recipe.draft_lr, recipe.seed + 1),
    ):
        name = f"tiny-{role}"
        model, stats = train_model(
            cfg, train_stream, recipe, steps, lr, seed, tok.bos_id, log, name
        )
        paths[role] = save_checkpoint(model, out_dir / "checkpoints" / name, tok_dir)
        models[role], _ = load_checkpoint(paths[role])  # evaluate what ships (bf16 weights)
        metrics = {"parameters": cfg.num_parameters(), **stats, **evaluate(models[role])}
        if role == "draft":
            metrics["greedy_acceptance_vs_target"] = round(
                evalset.greedy_acceptance(
                    models["target"], models["draft"], tok, items, recipe.continuation_tokens
                ),
                4,
            )
        metrics["machine_threads"] = recipe.threads
        (paths[role] / "README.md").write_text(model_card(name, role, recipe, metrics))
        log(f"[{name}] {metrics}")
        summary[role] = metrics
    summary["total_seconds"] = round(time.perf_counter() - t_start, 1)
    summary["eval_items"] = len(items)
    return summary


STAGES = ("all", "base", "long", "draft-1l")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``effbench train-tiny [--out DIR] [--steps N] [--quick] [--stage S] [--target DIR]``.

    Stages: ``base`` (tokenizer, eval set, tiny-target, tiny-draft), ``long`` (tiny-long and the
    long eval set, continued from the target), ``draft-1l`` (the distilled one-layer draft);
    ``all`` runs them in that order, the later two from the target just trained.
    """
    ap = argparse.ArgumentParser(prog="effbench train-tiny", description=main.__doc__)
    ap.add_argument("--out", type=Path, default=Path("tiny-models"), help="output directory")
    ap.add_argument(
        "--steps", type=int, default=None,
        help="target training steps (draft steps scale in the same proportion)",
    )  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="a few steps on a tiny slice (tests)")
    ap.add_argument("--stage", choices=STAGES, default="all", help="which models to train")
    ap.add_argument("--target", type=Path, default=None,
                    help="target checkpoint the long and draft-1l stages start from "
                    "(default: OUT/checkpoints/tiny-target, else the shipped one)")  # fmt: skip
    args = ap.parse_args(argv)
    recipe = QUICK_RECIPE if args.quick else DEFAULT_RECIPE
    if args.steps is not None:
        ratio = recipe.draft_steps / recipe.target_steps
        recipe = replace(
            recipe, target_steps=args.steps, draft_steps=max(1, round(args.steps * ratio))
        )
    summary: dict = {}
    if args.stage in ("all", "base"):
        summary["base"] = train_tiny(args.out, recipe)
    target = args.target or args.out / "checkpoints" / "tiny-target"
    built_eval = args.out / "data" / "eval.jsonl"  # the base stage's, else the shipped set
    eval_path = built_eval if built_eval.is_file() else None
    if args.stage in ("long", "draft-1l") and args.target is None and not target.is_dir():
        from effbench.kernels_ref.checkpoint import resolve_model

        target = resolve_model("tiny-target")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        if args.stage in ("all", "long"):
            from effbench.kernels_ref import train_long as tl

            long_recipe = tl.QUICK_LONG_RECIPE if args.quick else tl.DEFAULT_LONG_RECIPE
            summary["long"] = tl.train_long_stage(
                target, args.out, long_recipe, grid_items=2 if args.quick else 8,
                eval_path=eval_path,
            )  # fmt: skip
        if args.stage in ("all", "draft-1l"):
            from effbench.kernels_ref import train_draft as td

            quick = dict(max_train_files=30, eval_items=4) if args.quick else {}
            summary["draft-1l"] = td.train_draft_stage(
                target, args.out / "checkpoints",
                td.QUICK_DRAFT_RECIPE if args.quick else td.DEFAULT_DRAFT_RECIPE, **quick,
                eval_path=eval_path,
            )  # fmt: skip
    finally:
        torch.set_num_threads(threads_before)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

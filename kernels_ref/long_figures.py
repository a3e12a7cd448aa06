"""Figures that show whether a model uses distant context, and tiny-long's model card.

All are pure measurements of a model on committed data (``long_eval.jsonl`` and retrieval items
whose haystack is cut from it), each run with full causal attention and with attention
restricted to the last ``window`` tokens (``LlamaModel.forward(window=...)``); the gap between
the two is what a technique that keeps only recent tokens stands to lose.

* :func:`per_position_loss` - mean next-token loss at each position of the long eval set's
  longest prompts (the same held-out files for every position), bucketed.
* :func:`long_perplexity` - perplexity and top-1 agreement with the reference of the 64-token
  continuations, per context length.
* :func:`retrieval_grid` - exact-match accuracy per (task, length, depth): the
  needle-in-a-haystack grid.

:func:`loss_curve_svg` draws the per-position curve as a small standalone SVG for the card
(written by hand: a dozen lines, and the card must render without a plotting stack).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from effbench.kernels_ref.long_evalset import haystack_stream, items_at
from effbench.kernels_ref.model import LlamaModel
from effbench.kernels_ref.retrieval import Haystack, RetrievalSpec, make_items, score_item
from effbench.kernels_ref.tokenizer import Tokenizer

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@torch.no_grad()
def per_position_loss(
    model: LlamaModel, items: Sequence[dict], tok: Tokenizer, length: int,
    window: int | None = None, bucket: int = 128,
) -> list[dict]:  # fmt: skip
    """Mean loss per ``bucket`` positions over the items' ``length``-token sequences."""
    rows = [p + c for p, c in items_at(items, length, tok)]
    ids = torch.tensor(rows, device=model.device)
    total = torch.zeros(length - 1)
    for row in ids:
        logits = model(row[None, :-1], window=window)[0].float()
        total += F.cross_entropy(logits, row[1:], reduction="none").cpu()
    mean = total / len(rows)
    out = []
    for start in range(0, length - 1, bucket):
        seg = mean[start : start + bucket]
        out.append({"position": start + bucket // 2, "loss": round(float(seg.mean()), 4)})
    return out


@torch.no_grad()
def long_perplexity(
    model: LlamaModel, items: Sequence[dict], tok: Tokenizer, length: int, window: int | None = None
) -> dict:
    """Perplexity and top-1 agreement of the continuations at context ``length``."""
    nll, hits, count = 0.0, 0, 0
    for prompt, cont in items_at(items, length, tok):
        ids = torch.tensor([prompt + cont], device=model.device)
        logits = model(ids[:, :-1], window=window)[0, len(prompt) - 1 :].float()
        target = ids[0, len(prompt) :]
        nll += F.cross_entropy(logits, target, reduction="sum").item()
        hits += int((logits.argmax(-1) == target).sum())
        count += len(cont)
    return {"perplexity": round(math.exp(nll / count), 3), "top1": round(hits / count, 4)}


def retrieval_grid(
    model: LlamaModel, hay: Haystack, lengths: Sequence[int], depths: Sequence[float] = DEPTHS,
    tasks: Sequence[str] = ("needle",), items: int = 8, window: int | None = None, seed: int = 0,
    **spec_kw: int,
) -> list[dict]:  # fmt: skip
    """Exact-match accuracy and mean token accuracy per (task, length, depth) cell.

    A row's ``task`` names the distractors too (``needle+3 distractors``) when there are any.
    """
    out = []
    for task in tasks:
        kw = dict(spec_kw)
        if task == "multi-needle":
            kw.setdefault("needles", 3)
        n_decoys = kw.get("distractors", 0)
        label = f"{task}+{n_decoys} distractors" if n_decoys else task
        for length in lengths:
            for depth in depths:
                spec = RetrievalSpec(task=task, length=length, depth=depth, items=items,
                                     seed=seed, **kw)  # fmt: skip
                scores = [score_item(model, it, window) for it in make_items(spec, hay)]
                out.append({
                    "task": label, "length": length, "depth": depth,
                    "exact": sum(s["exact"] for s in scores) / len(scores),
                    "token_accuracy": round(
                        sum(s["token_accuracy"] for s in scores) / len(scores), 4
                    ),
                })  # fmt: skip
    return out


def eval_haystack(items: Sequence[dict], tok: Tokenizer) -> Haystack:
    """The committed held-out haystack every retrieval figure is measured on."""
    return Haystack(tok, haystack_stream(items, tok))


def loss_curve_svg(curves: dict[str, list[dict]], width: int = 560, height: int = 260) -> str:
    """A line chart of per-position loss (one polyline per named curve) as SVG text."""
    pts = [p for rows in curves.values() for p in rows]
    x_max = max(p["position"] for p in pts)
    y_lo, y_hi = min(p["loss"] for p in pts), max(p["loss"] for p in pts)
    pad, colors = 40, ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")

    def xy(p: dict) -> str:
        x = pad + (width - 2 * pad) * p["position"] / x_max
        y = height - pad - (height - 2 * pad) * (p["loss"] - y_lo) / max(1e-9, y_hi - y_lo)
        return f"{x:.1f},{y:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="black"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
        f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">token position</text>',
        f'<text x="4" y="{pad - 8}">loss (nats)  {y_hi:.2f} top, {y_lo:.2f} bottom</text>',
        f'<text x="{width - pad}" y="{height - pad + 14}" text-anchor="end">{x_max}</text>',
    ]
    for i, (name, rows) in enumerate(curves.items()):
        c = colors[i % len(colors)]
        pts_s = " ".join(xy(p) for p in rows)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{pts_s}"/>')
        parts.append(f'<text x="{width - pad - 150}" y="{pad + 14 * i}" fill="{c}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def evaluate_long(
    model: LlamaModel, tok: Tokenizer, items: Sequence[dict], window: int = 256,
    grid_items: int = 8, log=print,
) -> dict:  # fmt: skip
    """Every long-context figure of ``model``, with full attention and with ``window``.

    Only lengths the model's positions cover are measured. Returns plain JSON-able data:
    ``perplexity`` (per length and mode), ``per_position`` (curves at the longest length),
    ``retrieval`` (needle grid over lengths x depths; multi-needle and signature at 2048).
    """
    cap = model.config.max_position_embeddings
    lengths = [n for n in (int(k) for k in items[0]["prompts"]) if n <= cap]
    modes = {"full": None, f"window{window}": window}
    out: dict = {"window": window, "lengths": lengths, "perplexity": {}, "per_position": {},
                 "retrieval": []}  # fmt: skip
    for n in lengths:
        out["perplexity"][str(n)] = {m: long_perplexity(model, items, tok, n, w)
                                     for m, w in modes.items()}  # fmt: skip
        log(f"[long eval] perplexity at {n}: {out['perplexity'][str(n)]}")
    if lengths:
        longest = max(lengths)
        out["per_position"] = {m: per_position_loss(model, items, tok, longest, w)
                               for m, w in modes.items()}  # fmt: skip
    hay = eval_haystack(items, tok)
    grid_lengths = [n for n in (512, 1024, 2048, 4096) if n + 24 <= cap]
    for m, w in modes.items():
        rows = retrieval_grid(model, hay, grid_lengths, items=grid_items, window=w)
        mid = [n for n in grid_lengths if n <= 2048][-1:] or grid_lengths[-1:]
        rows += retrieval_grid(model, hay, mid, tasks=("multi-needle", "signature"),
                               items=grid_items, window=w)  # fmt: skip
        rows += retrieval_grid(model, hay, mid, items=grid_items, window=w, distractors=3)
        out["retrieval"] += [{"mode": m, **r} for r in rows]
        log(f"[long eval] retrieval ({m}): mean exact "
            f"{sum(r['exact'] for r in rows) / max(1, len(rows)):.3f}")  # fmt: skip
    return out


def retrieval_table(rows: Sequence[dict]) -> list[str]:
    """Markdown table: one row per (task, length, mode), one column per depth."""
    depths = sorted({r["depth"] for r in rows})
    keys = sorted({(r["task"], r["length"], r["mode"]) for r in rows},
                  key=lambda k: (k[0], k[1], k[2] != "full"))  # fmt: skip
    lines = ["| task | length | attention | " + " | ".join(f"depth {d:.0%}" for d in depths)
             + " | mean |", "|" + " --- |" * (len(depths) + 4)]  # fmt: skip
    for task, length, mode in keys:
        cell = {r["depth"]: r["exact"] for r in rows
                if (r["task"], r["length"], r["mode"]) == (task, length, mode)}  # fmt: skip
        vals = [cell.get(d) for d in depths]
        mean = sum(v for v in vals if v is not None) / max(1, sum(v is not None for v in vals))
        lines.append(f"| {task} | {length} | {mode} | "
                     + " | ".join("" if v is None else f"{v:.2f}" for v in vals)
                     + f" | {mean:.2f} |")  # fmt: skip
    return lines

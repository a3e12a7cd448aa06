"""Engine-level workloads: which prompts and reference continuations a run generates and scores.

``[engine] workload`` names one of:

* ``eval`` (default) - the 64 short eval items (``kernels_ref/data/eval.jsonl``: about 96 prompt
  and 64 continuation tokens).
* ``long-eval:<length>`` - the long eval set (``long_eval.jsonl``) cut so that ``[bos] + prompt +
  continuation`` is ``length`` tokens (1024, 2048 or 4096); the same 64-token continuations at
  every length.
* ``retrieval:<task>:<length>[:key=value...]`` - retrieval items (``kernels_ref.retrieval``;
  tasks ``needle``, ``multi-needle``, ``signature``) of exactly ``length`` prompt tokens, the
  continuation being the answer. Keys: ``depth`` (0-1, default 0.5), ``needles`` (multi-needle,
  default 3), ``distractors`` (default 0), ``seed`` (default 0). Quality adds
  ``answer_exact_match``: items whose whole answer the technique predicts by argmax.
* ``editing`` - copy-heavy edits of held-out functions (``editing.jsonl``), for model-free
  drafting.

The records' ``workload`` field carries the name (``eval16-b4-n24`` stays as it always was for
``eval``; ``long-eval:2048-p16-b4-n24`` and so on otherwise), so the dashboard and the gate
can tell them apart. Names are validated when the preset loads; whether the model's positions
cover the workload is checked before the run starts (:func:`check_fits`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from effbench.kernels_ref.editing import load_editing_set
from effbench.kernels_ref.long_evalset import (
    CONTINUATION_TOKENS,
    LENGTHS,
    items_at,
    load_long_evalset,
)
from effbench.kernels_ref.long_figures import eval_haystack
from effbench.kernels_ref.retrieval import TASKS, RetrievalSpec, make_items
from effbench.kernels_ref.tokenizer import Tokenizer

KINDS = ("eval", "long-eval:<length>", "retrieval:<task>:<length>[:key=value...]", "editing")
_RETRIEVAL_KEYS = {"depth": float, "needles": int, "distractors": int, "seed": int}
_LONGEST_ANSWER = 24  # tokens: the longest retrieval answer (a signature) fits in this


@dataclass(frozen=True)
class EngineWorkload:
    """A parsed ``[engine] workload`` name."""

    name: str
    kind: str
    length: int = 0
    retrieval: RetrievalSpec | None = None

    def label(self, prompts: int, batch: int, new_tokens: int) -> str:
        """The records' ``workload`` field for this workload and the engine settings."""
        if self.kind == "eval":
            return f"eval{prompts}-b{batch}-n{new_tokens}"
        return f"{self.name}-p{prompts}-b{batch}-n{new_tokens}"

    def positions_needed(self, new_tokens: int) -> int:
        """Positions a run uses: the longer of scoring (prompt + reference) and generating."""
        if self.kind == "long-eval":
            return max(self.length, self.length - CONTINUATION_TOKENS + new_tokens)
        if self.kind == "retrieval":
            return self.length + max(_LONGEST_ANSWER, new_tokens)
        return 0  # eval and editing items are short; the engine checks each request itself


def _bad(name: str, why: str) -> ValueError:
    return ValueError(f"unknown workload {name!r}: {why}; valid workloads: {', '.join(KINDS)}")


def parse_workload(name: str) -> EngineWorkload:
    """Parse and validate a workload name; ValueError (one line, with the choices) if bad."""
    if not isinstance(name, str):
        raise _bad(str(name), "not a string")
    head, _, rest = name.partition(":")
    if head in ("eval", "editing"):
        if rest:
            raise _bad(name, f"'{head}' takes no arguments")
        return EngineWorkload(name, head)
    if head == "long-eval":
        if not rest.isdigit() or int(rest) not in LENGTHS:
            raise _bad(name, f"long-eval length must be one of {list(LENGTHS)}")
        return EngineWorkload(name, head, int(rest))
    if head == "retrieval":
        parts = rest.split(":") if rest else []
        if len(parts) < 2 or parts[0] not in TASKS or not parts[1].isdigit():
            raise _bad(name, f"retrieval needs a task ({', '.join(TASKS)}) and a length, "
                       "e.g. retrieval:needle:2048:depth=0.5")  # fmt: skip
        kw: dict = {"needles": 3} if parts[0] == "multi-needle" else {}
        for part in parts[2:]:
            key, eq, value = part.partition("=")
            if not eq or key not in _RETRIEVAL_KEYS:
                raise _bad(name, f"retrieval option {part!r} is not key=value with key in "
                           f"{sorted(_RETRIEVAL_KEYS)}")  # fmt: skip
            try:
                kw[key] = _RETRIEVAL_KEYS[key](value)
            except ValueError:
                raise _bad(name, f"retrieval option {key} needs a number, got {value!r}") from None
        try:
            spec = RetrievalSpec(task=parts[0], length=int(parts[1]), **kw)
        except ValueError as e:
            raise _bad(name, str(e)) from None
        return EngineWorkload(name, head, int(parts[1]), spec)
    raise _bad(name, f"no workload kind {head!r}")


def check_fits(wl: EngineWorkload, max_positions: int, new_tokens: int, model: str) -> None:
    """Refuse (ValueError, one line) a workload longer than the model's trained positions."""
    need = wl.positions_needed(new_tokens)
    if need > max_positions:
        raise ValueError(
            f"workload {wl.name!r} needs {need} positions (prompt plus {new_tokens} new tokens), "
            f"but model {model!r} was trained for {max_positions} (max_position_embeddings); "
            "use a shorter workload or a long-context model such as 'tiny-long'"
        )


def workload_items(wl: EngineWorkload, tok: Tokenizer, n: int) -> list[tuple[list[int], list[int]]]:
    """``n`` (``[bos] + prompt`` ids, reference continuation ids) pairs of a non-eval workload.

    Retrieval items are generated (``n`` of them); the other sets are cut to their first ``n``.
    """
    if wl.kind == "long-eval":
        return items_at(load_long_evalset(), wl.length, tok)[:n]
    if wl.kind == "retrieval":
        hay = eval_haystack(load_long_evalset(), tok)
        spec = replace(wl.retrieval, items=n)
        return [(list(it.prompt_ids), list(it.answer_ids)) for it in make_items(spec, hay)]
    if wl.kind == "editing":
        return [([tok.bos_id, *tok.encode(it["prompt"])], tok.encode(it["continuation"]))
                for it in load_editing_set()[:n]]  # fmt: skip
    raise ValueError(f"workload {wl.name!r} is read from the eval set, not built here")

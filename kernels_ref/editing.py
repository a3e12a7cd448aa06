"""The editing (copy-heavy) workload: reproduce a held-out function with one small edit.

Why: model-free drafters (prompt lookup decoding, Aggressive Decoding) draft the next tokens by
copying from the prompt, so they only pay on outputs that overlap their input: code edits,
rewrites, grammar correction. The eval set (``evalset.py``) is plain continuation of held-out
files, where little of the output is in the prompt, so it cannot show such a drafter at work.
This set is the copy-heavy counterpart, with the overlap of every item measured and recorded so a
result can be read against it.

The tiny models are code LMs that follow no natural-language instruction, so the instruction is
written as code that a code LM continues by copying. The prompt is::

    <held-out function, as in its file, dedented>


    # edit: <what changed, as a comment>
    <the first ``lead_lines`` lines of the edited function>

and the reference continuation is the rest of the edited function. The edits (deterministic from
the seed, applied through ``ast`` positions and ``tokenize`` tokens, and checked by comparing the
edited function's AST with the original's):

* ``rename-function``: the ``def`` name and every reference to it in the body (a recursive call,
  ``self.<name>`` / ``cls.<name>`` in a method) get a new name (``foo`` -> ``foo_impl``, ...);
* ``rename-variable``: one parameter or local variable is renamed throughout the function (every
  ``ast.Name`` and ``ast.arg`` of that name; attributes and keyword names of calls are kept);
* ``reformat``: the code is reformatted without changing its AST: string quotes switched (``'``
  to ``"``, or back when the function uses only double quotes), or indentation halved (4 -> 2
  spaces; text inside multi-line strings is left alone).

Overlap (:func:`overlap_ratio`), the prompt-lookup definition: with ``S = prompt + output``, an
output token ``S[j]`` is *copyable* when the ``(n + 1)``-gram ``S[j-n : j+1]`` (its ``n``
preceding tokens and the token itself) also ends at some earlier position ``m < j``, i.e. it
occurs in the prompt or in the output before ``j``. That is exactly when a prompt-lookup drafter
keyed on the last ``n`` tokens has at least one match whose next token is the right one (an
upper bound on what it drafts correctly: it proposes one of the matches). The ratio is the
fraction of output tokens that are copyable; ``n = 3`` by default; an empty output has ratio 0.

Like ``eval.jsonl`` the set is committed (``kernels_ref/data/editing.jsonl``, built from
CPython 3.11's stdlib with the ``tiny-target`` tokenizer): the stdlib differs between Python
versions and the figures must not change with the machine. Every item's prompt and continuation
re-encode to exactly the ids they were cut at, so ``[bos] + prompt + continuation`` scores the
same tokens everywhere.

``python -m effbench.kernels_ref.editing measure`` prints the overlap of the reference
continuations and of the tiny target's greedy output; ``... build`` regenerates the file.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import copy
import io
import keyword
import random
import re
import statistics
import tokenize
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from effbench.kernels_ref.corpus import Document
from effbench.kernels_ref.evalset import _stable_cut, greedy_continuations, read_jsonl, write_jsonl
from effbench.kernels_ref.model import LlamaModel
from effbench.kernels_ref.tokenizer import Tokenizer

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "editing.jsonl"
N_ITEMS = 32
EDIT_KINDS = ("rename-function", "rename-variable", "reformat")
OVERLAP_N = 3
LEAD_LINES = 2
MIN_LINES, MAX_LINES = 8, 40
MIN_TOKENS, MAX_TOKENS = 60, 110  # tokens of the original function
MAX_CONTEXT = 256  # [bos] + prompt + continuation at most: the tiny models' training window
MAX_PER_FILE = 2
GREEDY_NEW_TOKENS = 64
EDIT_COMMENT = "# edit: "  # how the line stating the edit starts, after two blank lines

_FUNCTION_SUFFIXES = ("_impl", "_v2", "_new", "_inner", "_helper")
_FUNCTION_PREFIXES = ("do_", "new_", "basic_")
_VARIABLE_NAMES = (
    "value", "item", "result", "data", "obj", "entry", "elem", "current", "tmp", "arg",
    "target", "source", "element", "thing", "val",
)  # fmt: skip
_RESERVED = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | {"self", "cls"}

_Fn = ast.FunctionDef | ast.AsyncFunctionDef


# ----------------------------------------------------------------------------- overlap


def copyable_mask(
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    n: int = OVERLAP_N,
    from_output: bool = True,
) -> list[bool]:
    """Per output token, whether it is copyable (see the module docstring), in output order.

    With ``S = prompt + output``, ``S[j]`` (``j >= len(prompt)``) is copyable when the
    ``(n + 1)``-gram ending at ``j`` also ends at an earlier position: in the prompt, or (when
    ``from_output``, as prompt lookup searches its whole input) in the output before ``j``. The
    ``n`` tokens of context may straddle the prompt/output boundary. A token with fewer than
    ``n`` tokens before it in ``S`` is not copyable.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    seq = [*prompt_ids, *output_ids]
    p = len(prompt_ids)
    seen = {tuple(seq[j - n : j + 1]) for j in range(n, p)}
    mask = []
    for j in range(p, len(seq)):
        if j < n:
            mask.append(False)
            continue
        gram = tuple(seq[j - n : j + 1])
        mask.append(gram in seen)
        if from_output:
            seen.add(gram)
    return mask


def overlap_ratio(
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    n: int = OVERLAP_N,
    from_output: bool = True,
) -> float:
    """Fraction of ``output_ids`` that are copyable (:func:`copyable_mask`); 0.0 if it is empty.

    The prompt-lookup definition (module docstring): the share of output tokens that a drafter
    keyed on the ``n`` preceding tokens could propose from some earlier occurrence, searched in
    the prompt and the preceding output (only the prompt when ``from_output`` is False).
    """
    mask = copyable_mask(prompt_ids, output_ids, n, from_output)
    return sum(mask) / len(mask) if mask else 0.0


# ----------------------------------------------------------------------------- functions


@dataclass(frozen=True)
class HeldoutFunction:
    """A function (or method) of a held-out file, dedented to column 0 so it parses on its own."""

    source_path: str
    qualname: str
    lineno: int
    end_lineno: int
    source: str


def _dedent(lines: Sequence[str], col: int) -> str | None:
    """Remove ``col`` leading spaces from every line; None if a non-blank line has fewer."""
    out = []
    for line in lines:
        if line.startswith(" " * col):
            out.append(line[col:])
        elif not line.strip():
            out.append("\n")
        else:
            return None
    return "".join(out)


def _undecorated(node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
    """A shallow copy of ``node`` without its decorators (which the extracted text leaves out)."""
    bare = copy.copy(node)
    bare.decorator_list = []
    return bare


def extract_functions(source_path: str, text: str) -> list[HeldoutFunction]:
    """Module-level functions and methods (not nested functions) of a file, in source order.

    A function is kept only if its dedented text parses to the same AST as in the file (a
    dedent that would change a multi-line string is refused) and has no tab or carriage return.
    Decorators are not part of the text.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    lines = text.splitlines(keepends=True)
    out: list[HeldoutFunction] = []

    def visit(body: Iterable[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, _Fn) and node.end_lineno is not None:
                src = _dedent(lines[node.lineno - 1 : node.end_lineno], node.col_offset)
                if src is None or "\t" in src or "\r" in src:
                    continue
                src = src if src.endswith("\n") else src + "\n"
                try:
                    parsed = ast.parse(src).body[0]
                except SyntaxError:
                    continue
                if ast.dump(parsed) != ast.dump(_undecorated(node)):
                    continue
                out.append(
                    HeldoutFunction(
                        source_path, prefix + node.name, node.lineno, node.end_lineno, src
                    )
                )

    visit(tree.body, "")
    return out


# ----------------------------------------------------------------------------- edits


@dataclass(frozen=True)
class Edit:
    """An edited function: its text, the comment that states the edit, and what was changed."""

    kind: str
    source: str
    comment: str
    detail: dict
    marker: str  # text that must appear in the continuation for the edit to be visible there


def _replace_at(source: str, spots: Iterable[tuple[int, int, str, str]]) -> str | None:
    """Replace ``old`` by ``new`` at each (1-based line, UTF-8 byte column, old, new) spot.

    None if the text at a spot is not ``old`` (positions the AST got wrong, e.g. in f-strings).
    """
    lines = [line.encode("utf-8") for line in source.splitlines(keepends=True)]
    by_line: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    for row, col, old, new in set(spots):
        by_line[row].append((col, old, new))
    for row, edits in by_line.items():
        line = lines[row - 1]
        for col, old, new in sorted(edits, reverse=True):
            o = old.encode("utf-8")
            if line[col : col + len(o)] != o:
                return None
            line = line[:col] + new.encode("utf-8") + line[col + len(o) :]
        lines[row - 1] = line
    return b"".join(lines).decode("utf-8")


def _renamed_ok(original: str, edited: str | None, old: str, new: str) -> bool:
    """Whether ``edited`` differs from ``original`` only in identifiers ``old`` -> ``new``."""
    if edited is None or edited == original:
        return False
    try:
        dump = ast.dump(ast.parse(edited))
    except SyntaxError:
        return False
    return dump.replace(f"'{new}'", f"'{old}'") == ast.dump(ast.parse(original))


def _name_spots(fn: ast.AST, name: str, new: str) -> list[tuple[int, int, str, str]]:
    """Spots of every ``ast.Name`` and ``ast.arg`` called ``name`` under ``fn``."""
    spots = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and node.id == name:
            spots.append((node.lineno, node.col_offset, name, new))
        elif isinstance(node, ast.arg) and node.arg == name:
            spots.append((node.lineno, node.col_offset, name, new))
    return spots


def _pick_new_name(rng: random.Random, source: str, candidates: Sequence[str]) -> str | None:
    """One of ``candidates`` that is no builtin or keyword and occurs nowhere in ``source``.

    Absent even as a substring, so in the edited AST the new name can only come from the edit.
    """
    fresh = [c for c in candidates if c not in _RESERVED and c not in source]
    return rng.choice(fresh) if fresh else None


def rename_function(source: str, rng: random.Random) -> Edit | None:
    """Rename the function (not a dunder) and its references in its own body."""
    fn = ast.parse(source).body[0]
    assert isinstance(fn, _Fn)
    old = fn.name
    if old.startswith("__") and old.endswith("__"):
        return None
    under = old[: len(old) - len(old.lstrip("_"))]
    base = old[len(under) :]
    cands = [f"{under}{base}{s}" for s in _FUNCTION_SUFFIXES]
    cands += [f"{under}{p}{base}" for p in _FUNCTION_PREFIXES]
    new = _pick_new_name(rng, source, cands)
    if new is None:
        return None
    header = source.split("\n", 1)[0]
    m = re.match(rf"\s*(?:async\s+)?def\s+({re.escape(old)})\b", header)
    if m is None:
        return None
    spots = [(fn.lineno, len(header[: m.start(1)].encode("utf-8")), old, new)]
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and node.id == old:
            spots.append((node.lineno, node.col_offset, old, new))
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == old
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
            and node.end_lineno is not None
            and node.end_col_offset is not None
        ):
            col = node.end_col_offset - len(old.encode("utf-8"))
            spots.append((node.end_lineno, col, old, new))
    edited = _replace_at(source, spots)
    if not _renamed_ok(source, edited, old, new):
        return None
    assert edited is not None
    comment = f"{EDIT_COMMENT}rename function {old} to {new}"
    detail = {"old": old, "new": new}
    marker = new if len(spots) > 1 else ""
    return Edit("rename-function", edited, comment, detail, marker)


def rename_variable(source: str, rng: random.Random) -> Edit | None:
    """Rename one parameter or local variable (used at least 3 times) throughout the function."""
    fn = ast.parse(source).body[0]
    assert isinstance(fn, _Fn)
    declared: set[str] = set()
    counts: dict[str, int] = defaultdict(int)
    bound: set[str] = set()
    for node in ast.walk(fn):
        if isinstance(node, ast.Global | ast.Nonlocal):
            declared.update(node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
            counts[node.arg] += 1
        elif isinstance(node, ast.Name):
            counts[node.id] += 1
            if isinstance(node.ctx, ast.Store):
                bound.add(node.id)
    names = sorted(v for v in bound if v not in declared and v not in _RESERVED and counts[v] >= 3)
    rng.shuffle(names)
    for old in names:
        new = _pick_new_name(rng, source, _VARIABLE_NAMES + (f"new_{old}", f"{old}_value"))
        if new is None:
            continue
        edited = _replace_at(source, _name_spots(fn, old, new))
        if _renamed_ok(source, edited, old, new):
            assert edited is not None
            comment = f"{EDIT_COMMENT}rename variable {old} to {new}"
            return Edit("rename-variable", edited, comment, {"old": old, "new": new}, new)
    return None


def _tokens(source: str) -> list[tokenize.TokenInfo] | None:
    try:
        return list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, SyntaxError):
        return None


def _same_ast(a: str, b: str) -> bool:
    try:
        return a != b and ast.dump(ast.parse(a)) == ast.dump(ast.parse(b))
    except SyntaxError:
        return False


def reformat_quotes(source: str, rng: random.Random) -> Edit | None:
    """Switch simple string literals from ``'`` to ``"`` (or ``"`` to ``'`` if none is single).

    Only one-line, non-f, non-triple-quoted literals without a backslash or either quote inside
    are switched, so the value (and the AST) is unchanged.
    """
    del rng  # the direction follows the function's own quoting
    toks = _tokens(source)
    if toks is None:
        return None
    simple: dict[str, list[tokenize.TokenInfo]] = {"'": [], '"': []}
    for t in toks:
        if t.type != tokenize.STRING or t.start[0] != t.end[0]:
            continue
        prefix = re.match(r"[A-Za-z]*", t.string).group(0)  # type: ignore[union-attr]
        body = t.string[len(prefix) + 1 : -1]
        quote = t.string[len(prefix)]
        if "f" in prefix.lower() or body.startswith(quote * 2) or "\\" in body:
            continue
        if "'" in body or '"' in body:
            continue
        simple[quote].append(t)
    old_q, new_q = ("'", '"') if simple["'"] else ('"', "'")
    if not simple[old_q]:
        return None
    lines = source.splitlines(keepends=True)
    marker = ""
    for t in sorted(simple[old_q], key=lambda t: t.start, reverse=True):
        (row, col), (_, end) = t.start, t.end
        prefix = re.match(r"[A-Za-z]*", t.string).group(0)  # type: ignore[union-attr]
        new = f"{prefix}{new_q}{t.string[len(prefix) + 1 : -1]}{new_q}"
        marker = marker or new  # the last literal switched, which must be in the continuation
        line = lines[row - 1]
        lines[row - 1] = line[:col] + new + line[end:]
    edited = "".join(lines)
    if not _same_ast(source, edited):
        return None
    style = "double" if new_q == '"' else "single"
    comment = f"{EDIT_COMMENT}reformat with {style} quotes"
    return Edit("reformat", edited, comment, {"style": f"{style} quotes"}, marker)


def reformat_indent(source: str, rng: random.Random) -> Edit | None:
    """Halve the indentation (4 -> 2 spaces) of every line not inside a multi-line string."""
    del rng
    toks = _tokens(source)
    if toks is None:
        return None
    inside: set[int] = set()
    for t in toks:
        if t.type == tokenize.STRING and t.end[0] > t.start[0]:
            inside.update(range(t.start[0] + 1, t.end[0] + 1))
    out = []
    for row, line in enumerate(source.splitlines(keepends=True), start=1):
        stripped = line.lstrip(" ")
        n = len(line) - len(stripped)
        if row in inside or not stripped.strip():
            out.append(line)
        else:
            out.append(" " * (n // 2) + stripped)
    edited = "".join(out)
    if not _same_ast(source, edited):
        return None
    comment = f"{EDIT_COMMENT}reformat with 2-space indentation"
    return Edit("reformat", edited, comment, {"style": "2-space indentation"}, "")


# The edit of item i is _SCHEDULE[i % 6]: the kinds take turns, the reformats alternate.
_SCHEDULE: tuple[Callable[[str, random.Random], Edit | None], ...] = (
    rename_function,
    rename_variable,
    reformat_quotes,
    rename_function,
    rename_variable,
    reformat_indent,
)


# ----------------------------------------------------------------------------- items


def make_item(
    fn: HeldoutFunction,
    edit: Edit,
    tok: Tokenizer,
    lead_lines: int = LEAD_LINES,
    n: int = OVERLAP_N,
) -> dict | None:
    """The item of one edited function, or None if no stable cut keeps the whole remainder.

    The prompt is the original function, two blank lines, the edit comment and the first
    ``lead_lines`` lines of the edited function; the continuation is the rest of the edited
    function. The boundary is moved to the nearest token boundary (``evalset._stable_cut``) at
    which both texts re-encode to exactly their ids.
    """
    edited_lines = edit.source.splitlines(keepends=True)
    if len(edited_lines) <= lead_lines + 2:
        return None
    lead, rest = "".join(edited_lines[:lead_lines]), "".join(edited_lines[lead_lines:])
    prompt = f"{fn.source}\n\n{edit.comment}\n{lead}"
    ids = tok.encode(prompt + rest)
    n_prompt = len(tok.encode(prompt))
    cut = _stable_cut(tok, ids, 0, n_prompt, len(ids) - n_prompt)
    if cut is None or cut[0] + cut[1] != prompt + rest:
        return None
    p_text, c_text = cut
    if edit.marker and edit.marker not in c_text:
        return None  # the edit must show in what the model is asked to write
    p_ids, c_ids = tok.encode(p_text), tok.encode(c_text)
    return {
        "source_path": fn.source_path,
        "function": fn.qualname,
        "lines": [fn.lineno, fn.end_lineno],
        "edit": edit.kind,
        "edit_detail": edit.detail,
        "prompt": p_text,
        "continuation": c_text,
        "prompt_tokens": len(p_ids),
        "continuation_tokens": len(c_ids),
        "overlap_n": n,
        "overlap_ratio": round(overlap_ratio(p_ids, c_ids, n), 6),
    }


def candidate_functions(
    heldout_docs: Sequence[Document],
    tok: Tokenizer,
    min_tokens: int = MIN_TOKENS,
    max_tokens: int = MAX_TOKENS,
) -> list[HeldoutFunction]:
    """Held-out functions of ``MIN_LINES``..``MAX_LINES`` lines and ``min``..``max_tokens`` tokens.

    The token bound keeps ``[bos] + prompt + continuation`` (about twice the function plus the
    comment) within the 256-token windows the tiny models were trained on.
    """
    out = []
    for rel, text in sorted(heldout_docs):
        for fn in extract_functions(rel, text):
            n_lines = fn.end_lineno - fn.lineno + 1
            if MIN_LINES <= n_lines <= MAX_LINES:
                if min_tokens <= len(tok.encode(fn.source)) <= max_tokens:
                    out.append(fn)
    return out


def build_editing_set(
    heldout_docs: Sequence[Document],
    tok: Tokenizer,
    n_items: int = N_ITEMS,
    seed: int = 0,
    lead_lines: int = LEAD_LINES,
    min_tokens: int = MIN_TOKENS,
    max_tokens: int = MAX_TOKENS,
    max_context: int = MAX_CONTEXT,
) -> list[dict]:
    """``n_items`` edit items from held-out functions, deterministic from ``seed``.

    Functions are drawn in a seeded shuffle, at most ``MAX_PER_FILE`` per file; the edit kinds
    take turns (item ``i`` gets ``EDIT_KINDS[i % 3]``, the reformat alternating between quotes
    and indentation), a function the edit does not apply to is left for a later turn. Each
    edit's own choices (the new name) come from a generator seeded by ``seed`` and the
    function's place, so they do not depend on the order of the draw. An item whose
    ``[bos] + prompt + continuation`` exceeds ``max_context`` tokens is not taken.
    """
    fns = candidate_functions(heldout_docs, tok, min_tokens, max_tokens)
    rng = random.Random(seed)
    rng.shuffle(fns)
    per_file: dict[str, int] = defaultdict(int)
    items: list[dict] = []
    pending = list(fns)
    while len(items) < n_items:
        make_edit = _SCHEDULE[len(items) % len(_SCHEDULE)]
        for k, fn in enumerate(pending):
            if per_file[fn.source_path] >= MAX_PER_FILE:
                continue
            edit = make_edit(fn.source, random.Random(f"{seed}:{fn.source_path}:{fn.lineno}"))
            item = make_item(fn, edit, tok, lead_lines) if edit is not None else None
            size = 1 + item["prompt_tokens"] + item["continuation_tokens"] if item else 0
            if item is not None and size <= max_context:
                per_file[fn.source_path] += 1
                items.append(item)
                del pending[k]
                break
        else:
            raise ValueError(f"could only build {len(items)} of {n_items} editing items")
    return [{"id": f"edit-{i:03d}", **item} for i, item in enumerate(items)]


def write_editing_set(items: Sequence[dict], path: Path) -> None:
    """Write items as JSON lines (one object per line, stable key order)."""
    write_jsonl(items, path)


def load_editing_set(path: str | Path | None = None) -> list[dict]:
    """Read the editing set (the shipped ``kernels_ref/data/editing.jsonl`` by default)."""
    path = Path(path) if path is not None else DEFAULT_PATH
    return read_jsonl(path, "editing set", "run `python -m effbench.kernels_ref.editing build`")


# ----------------------------------------------------------------------------- measurement


def _summary(values: Sequence[float]) -> dict:
    return {"mean": statistics.fmean(values), "median": statistics.median(values)}


@torch.no_grad()
def _top1_hits(model: LlamaModel, bos: int, prompt_ids: list[int], cont_ids: list[int]) -> int:
    """How many continuation tokens are the argmax of ``[bos] + prompt`` + the preceding ones."""
    ids = torch.tensor([[bos, *prompt_ids, *cont_ids]], device=model.device)
    pred = model(ids[:, :-1])[0, len(prompt_ids) :].argmax(-1)
    return int((pred == ids[0, len(prompt_ids) + 1 :]).sum())


@torch.no_grad()
def induction_top1(
    model: LlamaModel, bos: int, n_seqs: int = 8, length: int = 40, seed: int = 0
) -> float:
    """Top-1 accuracy on the second copy of random token sequences repeated twice.

    The standard test of in-context copying (induction heads): a model that copies predicts
    the second copy almost perfectly; one that does not scores near chance (``1 / vocab``).
    Tokens are drawn from ids 3.. (no special token), after ``[bos]``.
    """
    gen = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    seq = torch.randint(3, vocab, (n_seqs, length), generator=gen)
    ids = torch.cat([torch.full((n_seqs, 1), bos), seq, seq], dim=1).to(model.device)
    pred = model(ids[:, :-1])[:, length + 1 :].argmax(-1)
    return float((pred == ids[:, length + 2 :]).float().mean())


def measure_overlap(
    model: LlamaModel,
    tok: Tokenizer,
    items: Sequence[dict],
    n_new: int = GREEDY_NEW_TOKENS,
    n: int = OVERLAP_N,
) -> dict:
    """Overlap of the reference continuations and of the model's greedy output with the prompt.

    Greedy decoding is ``evalset.greedy_continuations`` (``[bos] + prompt``, argmax, ``n_new``
    tokens). Per item mean/median of:

    * ``reference`` / ``greedy``: :func:`overlap_ratio` of the reference continuation / of the
      greedy output (searching the prompt and the preceding output, as prompt lookup does);
      ``*_prompt_only``: the same searching the prompt only (self-repetition of a degenerate
      output does not count);
    * ``prefix_match``: the share of the first ``min(n_new, len(reference))`` reference tokens
      the greedy output reproduces before its first difference;
    * ``top1_with_source`` / ``top1_without_source``: teacher-forced top-1 accuracy on the
      reference continuation, with the full prompt and with the original function cut out of it
      (comment and lead lines only). Their gap is what the model gains from the copy in its
      context: zero for a model that does not copy (no induction);

    and :func:`induction_top1`, the model's copying on random tokens.
    """
    cols: dict[str, list[float]] = defaultdict(list)
    greedy = greedy_continuations(model, tok, items, n_new)
    for it, (prefix_ids, out) in zip(items, greedy):
        p_ids, c_ids = prefix_ids[1:], tok.encode(it["continuation"])
        cols["reference"].append(overlap_ratio(p_ids, c_ids, n))
        cols["reference_prompt_only"].append(overlap_ratio(p_ids, c_ids, n, from_output=False))
        cols["greedy"].append(overlap_ratio(p_ids, out, n))
        cols["greedy_prompt_only"].append(overlap_ratio(p_ids, out, n, from_output=False))
        want = c_ids[:n_new]
        k = next((i for i, (a, b) in enumerate(zip(out, want)) if a != b), len(want))
        cols["prefix_match"].append(k / len(want))
        cut = it["prompt"].find("\n\n\n" + EDIT_COMMENT)
        short = tok.encode(it["prompt"][cut + 3 :]) if cut >= 0 else p_ids
        cols["top1_with_source"].append(_top1_hits(model, tok.bos_id, p_ids, c_ids) / len(c_ids))
        cols["top1_without_source"].append(_top1_hits(model, tok.bos_id, short, c_ids) / len(c_ids))
    res: dict = {"items": len(items), "n": n, "n_new": n_new}
    res.update({key: _summary(values) for key, values in cols.items()})
    res["induction_top1"] = induction_top1(model, tok.bos_id)
    res["greedy_per_item"] = cols["greedy"]
    return res


def main(argv: Sequence[str] | None = None) -> None:
    """``build`` regenerates the set; ``measure`` prints its overlap figures with a model."""
    parser = argparse.ArgumentParser(prog="python -m effbench.kernels_ref.editing")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the set from this Python's held-out stdlib files")
    b.add_argument("--out", type=Path, default=DEFAULT_PATH)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--lead-lines", type=int, default=LEAD_LINES)
    m = sub.add_parser("measure", help="overlap of the reference and of greedy output")
    m.add_argument("--path", type=Path, default=None)
    m.add_argument("--model", default="tiny-target")
    m.add_argument("--new-tokens", type=int, default=GREEDY_NEW_TOKENS)
    args = parser.parse_args(argv)
    from effbench.kernels_ref.checkpoint import load_checkpoint, resolve_model

    if args.cmd == "build":
        from effbench.kernels_ref.corpus import heldout_documents

        tok = Tokenizer.from_dir(resolve_model("tiny-target"))
        items = build_editing_set(
            heldout_documents(), tok, seed=args.seed, lead_lines=args.lead_lines
        )
        write_editing_set(items, args.out)
        print(f"wrote {len(items)} items to {args.out}")
        return
    model, tok = load_checkpoint(args.model)
    assert tok is not None, "the model directory has no tokenizer"
    res = measure_overlap(model, tok, load_editing_set(args.path), args.new_tokens)
    print(f"{res['items']} items, n = {res['n']}, {res['n_new']} greedy tokens")
    for key, value in res.items():
        if isinstance(value, dict):
            print(f"{key:22s} mean {value['mean']:.3f}  median {value['median']:.3f}")
    print(f"{'induction_top1':22s} {res['induction_top1']:.3f}")


if __name__ == "__main__":
    main()

"""The editing (copy-heavy) workload: overlap definition, edits, cuts and the committed set."""

from __future__ import annotations

import ast
import random
import textwrap
from itertools import product

import pytest

from effbench.kernels_ref import corpus
from effbench.kernels_ref import editing as ed
from effbench.kernels_ref.checkpoint import load_checkpoint, resolve_model
from effbench.kernels_ref.tokenizer import Tokenizer

# ----------------------------------------------------------------------------- overlap ratio


def _naive_mask(prompt: list[int], output: list[int], n: int, from_output: bool) -> list[bool]:
    """The definition read literally: the (n+1)-gram ending at j also ends at some m < j."""
    seq = prompt + output
    mask = []
    for j in range(len(prompt), len(seq)):
        limit = j if from_output else len(prompt)
        gram = seq[j - n : j + 1] if j >= n else None
        mask.append(
            gram is not None
            and any(m >= n and m < limit and seq[m - n : m + 1] == gram for m in range(limit))
        )
    return mask


def test_overlap_empty_output_is_zero() -> None:
    assert ed.overlap_ratio([1, 2, 3, 4], []) == 0.0
    assert ed.overlap_ratio([], []) == 0.0
    assert ed.copyable_mask([1, 2, 3], []) == []


def test_overlap_no_overlap_is_zero() -> None:
    assert ed.overlap_ratio([1, 2, 3, 4, 5], [6, 7, 8, 9]) == 0.0


def test_overlap_full_copy_is_one() -> None:
    # the prompt holds the text and its first n tokens again; the output is the rest of it
    text = list(range(10, 30))
    for n in (1, 3, 5):
        assert ed.overlap_ratio(text + text[:n], text[n:], n) == 1.0


def test_overlap_context_straddles_the_boundary() -> None:
    # the first output token is copyable through the prompt's last n tokens
    assert ed.copyable_mask([1, 2, 3, 4, 9, 2, 3, 4], [5, 6], n=3) == [False, False]
    assert ed.copyable_mask([1, 2, 3, 4, 5, 9, 2, 3, 4], [5, 6], n=3) == [True, False]


def test_overlap_counts_preceding_output_unless_prompt_only() -> None:
    out = [1, 2, 3, 1, 2, 3, 1]
    assert ed.copyable_mask([], out, n=2) == [False] * 5 + [True, True]
    assert ed.overlap_ratio([], out, n=2) == pytest.approx(2 / 7)
    assert ed.overlap_ratio([], out, n=2, from_output=False) == 0.0
    # a token with fewer than n tokens before it in prompt + output is never copyable
    assert ed.copyable_mask([7], [7, 7, 7], n=2) == [False, False, True]


def test_overlap_matches_the_literal_definition() -> None:
    rng = random.Random(0)
    for _, n, from_output in product(range(40), (1, 2, 3), (True, False)):
        prompt = [rng.randrange(4) for _ in range(rng.randrange(0, 12))]
        output = [rng.randrange(4) for _ in range(rng.randrange(0, 12))]
        want = _naive_mask(prompt, output, n, from_output)
        assert ed.copyable_mask(prompt, output, n, from_output) == want


def test_overlap_rejects_n_below_one() -> None:
    with pytest.raises(ValueError):
        ed.overlap_ratio([1], [1], n=0)


# ----------------------------------------------------------------------------- edits


def _src(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def test_extract_functions_dedents_methods_and_skips_nested_and_decorators() -> None:
    text = _src(
        '''
        import x

        @decorator
        def top(a):
            def inner(b):
                return b
            return inner(a)

        class C:
            class D:
                def method(self):
                    """Doc
            that dedents badly."""
                    return 1

            def other(self, y):
                return y
        '''
    )
    fns = ed.extract_functions("m.py", text)
    assert [f.qualname for f in fns] == ["top", "C.other"]  # D.method cannot be dedented
    assert fns[0].source.startswith("def top(a):\n") and "@decorator" not in fns[0].source
    assert fns[1].source == "def other(self, y):\n    return y\n"
    assert (fns[1].lineno, fns[1].end_lineno) == (16, 17)
    assert ed.extract_functions("bad.py", "def (:\n") == []


def test_rename_function_renames_recursion_and_self_references() -> None:
    src = _src(
        """
        def walk(self, node):
            for child in node.children:
                self.walk(child)
                other.walk(child)
            return walk
        """
    )
    edit = ed.rename_function(src, random.Random(0))
    assert edit is not None and edit.kind == "rename-function"
    old, new = edit.detail["old"], edit.detail["new"]
    assert old == "walk" and new.startswith(("walk", "do_", "new_", "basic_"))
    assert f"def {new}(self, node):" in edit.source
    assert f"self.{new}(child)" in edit.source and f"return {new}" in edit.source
    assert "other.walk(child)" in edit.source  # another object's attribute is left alone
    assert edit.comment == f"# edit: rename function walk to {new}"


def test_rename_function_keeps_dunders() -> None:
    assert ed.rename_function("def __init__(self):\n    pass\n", random.Random(0)) is None


def test_rename_variable_keeps_attributes_keywords_and_strings() -> None:
    src = _src(
        """
        def f(mode, x):
            obj.mode = mode
            g(mode=mode, y="mode")
            return mode + x
        """
    )
    edit = ed.rename_variable(src, random.Random(0))
    assert edit is not None and edit.detail["old"] == "mode"
    new = edit.detail["new"]
    assert edit.source == _src(
        f"""
        def f({new}, x):
            obj.mode = {new}
            g(mode={new}, y="mode")
            return {new} + x
        """
    )
    assert edit.marker == new


def test_rename_variable_needs_three_uses_and_skips_globals() -> None:
    assert ed.rename_variable("def f(a):\n    return a\n", random.Random(0)) is None
    src = "def f():\n    global g\n    g = 1\n    g = g + 1\n"
    assert ed.rename_variable(src, random.Random(0)) is None


def test_reformat_quotes_switches_only_simple_literals() -> None:
    src = _src(
        """
        def f(x):
            '''Doc.'''
            a = 'a' + b'b' + r'c'
            s = 'it"s' + f'{x}' + 'x\\\\n'
            return "d"
        """
    )
    edit = ed.reformat_quotes(src, random.Random(0))
    assert edit is not None and edit.detail == {"style": "double quotes"}
    assert 'a = "a" + b"b" + r"c"' in edit.source
    assert "s = 'it\"s' + f'{x}' + 'x\\\\n'" in edit.source  # unchanged: quote, f-string, escape
    assert "'''Doc.'''" in edit.source
    assert ast.dump(ast.parse(edit.source)) == ast.dump(ast.parse(src))
    only_double = 'def f():\n    return "a"\n'
    back = ed.reformat_quotes(only_double, random.Random(0))
    assert back is not None and back.source == "def f():\n    return 'a'\n"
    assert ed.reformat_quotes("def f():\n    return 1\n", random.Random(0)) is None


def test_reformat_indent_halves_code_but_not_string_interiors() -> None:
    src = _src(
        '''
        def f(x):
            """Doc.

            More.
            """
            if x:
                return [1,
                        2]
            return 0
        '''
    )
    edit = ed.reformat_indent(src, random.Random(0))
    assert edit is not None and edit.detail == {"style": "2-space indentation"}
    assert edit.source.splitlines() == [
        "def f(x):",
        '  """Doc.',
        "",
        "    More.",
        '    """',
        "  if x:",
        "    return [1,",
        "        2]",
        "  return 0",
    ]
    assert ast.dump(ast.parse(edit.source)) == ast.dump(ast.parse(src))


# ----------------------------------------------------------------------------- items


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_dir(resolve_model("tiny-target"))


@pytest.fixture(scope="module")
def heldout() -> list[corpus.Document]:
    return corpus.heldout_documents()


@pytest.fixture(scope="module")
def built(heldout: list, tok: Tokenizer) -> list[dict]:
    return ed.build_editing_set(heldout, tok, n_items=12, seed=0)


@pytest.fixture(scope="module")
def committed() -> list[dict]:
    return ed.load_editing_set()


def _split(item: dict) -> tuple[str, str, str]:
    """(original function, edit comment line, edited function) of an item."""
    cut = item["prompt"].index("\n\n\n" + ed.EDIT_COMMENT)
    original = item["prompt"][: cut + 1]
    comment, _, lead = item["prompt"][cut + 3 :].partition("\n")
    return original, comment, lead + item["continuation"]


def _names(source: str) -> set[str]:
    tree = ast.parse(source)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.arg for n in ast.walk(tree) if isinstance(n, ast.arg)
    }


def _check_item(item: dict, tok: Tokenizer) -> None:
    """Cut, fields and the edit of one item, from its own text (whatever stdlib built it)."""
    p_ids, c_ids = tok.encode(item["prompt"]), tok.encode(item["continuation"])
    assert (len(p_ids), len(c_ids)) == (item["prompt_tokens"], item["continuation_tokens"])
    assert tok.encode(item["prompt"] + item["continuation"]) == p_ids + c_ids
    assert 1 + len(p_ids) + len(c_ids) <= ed.MAX_CONTEXT
    assert item["overlap_n"] == ed.OVERLAP_N
    assert item["overlap_ratio"] == pytest.approx(ed.overlap_ratio(p_ids, c_ids), abs=1e-6)
    assert corpus.is_heldout(item["source_path"])

    original, comment, edited = _split(item)
    assert comment.startswith(ed.EDIT_COMMENT)
    orig_fn, edit_fn = ast.parse(original).body[0], ast.parse(edited).body[0]
    assert isinstance(orig_fn, ast.FunctionDef | ast.AsyncFunctionDef)
    assert isinstance(edit_fn, ast.FunctionDef | ast.AsyncFunctionDef)
    assert item["function"].split(".")[-1] == orig_fn.name
    assert edited != original
    kind, detail = item["edit"], item["edit_detail"]
    if kind in ("rename-function", "rename-variable"):
        old, new = detail["old"], detail["new"]
        assert new not in original
        assert (
            comment == f"{ed.EDIT_COMMENT}{kind.split('-')[0]} {kind.split('-')[1]} {old} to {new}"
        )
        renamed_back = ast.dump(ast.parse(edited)).replace(f"'{new}'", f"'{old}'")
        assert renamed_back == ast.dump(ast.parse(original))  # only the name changed
        assert old not in _names(edited)
        if kind == "rename-function":
            assert (orig_fn.name, edit_fn.name) == (old, new)
        else:
            assert old in _names(original) and new in item["continuation"]
    else:
        assert kind == "reformat"
        assert ast.dump(ast.parse(edited)) == ast.dump(ast.parse(original))
        style = detail["style"]
        assert comment == f"{ed.EDIT_COMMENT}reformat with {style}"
        if style == "2-space indentation":
            assert "\n  " in item["continuation"]
        else:
            assert style in ("double quotes", "single quotes")
    # the same edit comes out of the current code, from the item's own original text
    redo = {
        "rename-function": ed.rename_function,
        "rename-variable": ed.rename_variable,
        "double quotes": ed.reformat_quotes,
        "single quotes": ed.reformat_quotes,
        "2-space indentation": ed.reformat_indent,
    }[detail.get("style", kind)]
    again = redo(original, random.Random(f"0:{item['source_path']}:{item['lines'][0]}"))
    assert again is not None and again.source == edited and again.detail == detail


def test_generation_is_deterministic(heldout: list, tok: Tokenizer, built: list) -> None:
    assert ed.build_editing_set(heldout, tok, n_items=12, seed=0) == built
    assert ed.build_editing_set(heldout, tok, n_items=12, seed=1) != built


def test_generated_items_cut_and_edit(built: list, tok: Tokenizer) -> None:
    assert [it["id"] for it in built] == [f"edit-{i:03d}" for i in range(12)]
    assert [it["edit"] for it in built] == list(ed.EDIT_KINDS) * 4
    styles = [it["edit_detail"]["style"] for it in built if it["edit"] == "reformat"]
    assert styles[1::2] == ["2-space indentation"] * 2
    for item in built:
        _check_item(item, tok)


def test_committed_set_loads_with_every_field(committed: list, tok: Tokenizer) -> None:
    assert len(committed) == ed.N_ITEMS
    fields = {
        "id", "source_path", "function", "lines", "edit", "edit_detail", "prompt",
        "continuation", "prompt_tokens", "continuation_tokens", "overlap_n", "overlap_ratio",
    }  # fmt: skip
    assert all(set(item) == fields for item in committed)
    assert [it["id"] for it in committed] == [f"edit-{i:03d}" for i in range(ed.N_ITEMS)]
    assert {it["edit"] for it in committed} == set(ed.EDIT_KINDS)
    assert max(sum(it["source_path"] == p for it in committed) for p in {
        it["source_path"] for it in committed
    }) <= ed.MAX_PER_FILE  # fmt: skip
    for item in committed:
        _check_item(item, tok)


def test_committed_set_is_copy_heavy(committed: list) -> None:
    ratios = sorted(it["overlap_ratio"] for it in committed)
    assert sum(ratios) / len(ratios) > 0.75
    assert ratios[len(ratios) // 2] > 0.75


def test_write_and_load_roundtrip(tmp_path, committed: list) -> None:
    path = tmp_path / "sub" / "editing.jsonl"
    ed.write_editing_set(committed[:3], path)
    assert ed.load_editing_set(path) == committed[:3]
    with pytest.raises(FileNotFoundError):
        ed.load_editing_set(tmp_path / "missing.jsonl")


def test_measure_overlap_runs_on_the_tiny_target(committed: list) -> None:
    model, tok = load_checkpoint("tiny-target")
    assert tok is not None
    res = ed.measure_overlap(model, tok, committed[:2], n_new=4)
    assert res["items"] == 2 and len(res["greedy_per_item"]) == 2
    for key in ("reference", "greedy", "greedy_prompt_only", "prefix_match", "top1_with_source"):
        assert 0.0 <= res[key]["mean"] <= 1.0
    ref = [it["overlap_ratio"] for it in committed[:2]]
    assert res["reference"]["mean"] == pytest.approx(sum(ref) / 2, abs=1e-6)
    assert 0.0 <= res["induction_top1"] <= 1.0

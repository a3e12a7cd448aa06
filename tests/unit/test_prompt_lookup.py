"""Prompt lookup's drafter: the latest earlier n-gram match, longest n first, capped at k."""

from __future__ import annotations

import pytest

from effbench.kernels_ref.decoding.prompt_lookup import PromptLookup, lookup


def test_latest_match_of_the_longest_ngram() -> None:
    toks = [1, 2, 3, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    # the trigram (5, 2, 3) never recurs; the bigram (2, 3) last recurred at index 5 -> 7, 8
    assert lookup(toks, k=2, max_ngram=3) == [7, 8]
    assert lookup(toks, k=5, max_ngram=3) == [7, 8, 5, 2, 3]
    assert lookup([4, 5, 6, 4, 5], k=3, max_ngram=2) == [6, 4, 5]


def test_no_match_proposes_nothing() -> None:
    assert lookup([1, 2, 3, 4], k=4, max_ngram=3) == []
    assert lookup([7], k=4, max_ngram=3) == []
    assert lookup([1, 2, 9, 2], k=4, max_ngram=3, min_ngram=2) == []  # only a unigram recurs


@pytest.mark.parametrize(("kw", "why"), [({"k": 0}, "k"), ({"min_ngram": 3, "max_ngram": 2},
                                                           "min_ngram <= max_ngram")])
def test_bad_parameters_are_refused(kw: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        PromptLookup(**kw)

"""Prompt lookup decoding: drafts copied from the request's own tokens, no draft model."""

from effbench.kernels_ref.decoding.prompt_lookup import PromptLookup
from effbench.suite.registry import register
from effbench.suite.technique import Paper, Param, from_kernel


@register(
    name="prompt-lookup",
    family="decoding",
    summary="Drafts the tokens that followed the latest earlier occurrence of the last n-gram "
    "(prompt and output so far); the target verifies them in one pass (output unchanged).",
    paper=Paper("Lossless Acceleration for Seq2seq Generation with Aggressive Decoding",
                "2205.10350"),
    lossless=True,
    params=from_kernel(
        PromptLookup,
        Param("k", "int", help="most draft tokens proposed per step", min=1, max=16,
              sweep=(2, 4, 8)),
        Param("max_ngram", "int", help="longest n-gram looked up (tried first)", min=1, max=8),
    ),
    levels=("engine",),
)
def prompt_lookup(k: int, max_ngram: int) -> PromptLookup:
    return PromptLookup(k=k, max_ngram=max_ngram)

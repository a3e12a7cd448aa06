"""Is the speculative sampling rule lossless on the real models? A chi-square check.

The decoder's own acceptance rule (``Speculative.accept``) is run many times at temperature 1
on the real target's and draft's next-token distributions for one eval prompt, with k = 1:
draw a draft token from q, let the rule keep it or resample. The first emitted token must be
distributed as the target's p (Leviathan et al., Theorem 3.5). The counts over the target's
15 most likely tokens plus one bucket for the rest are compared with p by Pearson's
chi-square test (scipy.stats.chisquare); the p-value is the metric. This is the unit test's
check (tests/unit/test_engine.py) on real distributions instead of a synthetic one.
"""

from __future__ import annotations

import torch
from scipy import stats as scipy_stats

from effbench.kernels_ref.attention.dense import DenseAttention
from effbench.kernels_ref.decoding._common import accept_drafts
from effbench.kernels_ref.engine import StepContext, layout_of
from effbench.kernels_ref.kvcache import FullKVCacheFactory

TOP = 15


def _next_logits(model, prompt: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model(torch.tensor([prompt], device=model.device))[0, -1].float()


def rejection_rule_pvalue(target, draft, prompt: list[int], n: int = 4000,
                          seed: int = 0) -> float:
    """Chi-square p-value of the first emitted token's distribution against the target's."""
    p_logits = _next_logits(target, prompt)
    q = torch.softmax(_next_logits(draft, prompt), -1)
    gen = torch.Generator(device=q.device).manual_seed(seed)
    ctx = StepContext(model=target, attention=DenseAttention(),
                      cache_factory=FullKVCacheFactory(), layout=layout_of(target),
                      temperature=1.0, generator=gen)
    rows = torch.stack([p_logits, p_logits])  # the rule reads row 0 (row 1: bonus token)
    draws = torch.multinomial(q, n, replacement=True, generator=gen).tolist()
    firsts = torch.tensor([accept_drafts(ctx, [d], [q], rows)[0] for d in draws])
    p = torch.softmax(p_logits, -1)
    top = torch.topk(p, TOP).indices
    observed = [(firsts == t).sum().item() for t in top.tolist()]
    observed.append(n - sum(observed))
    expected = [float(p[t]) * n for t in top.tolist()]
    expected.append(n - sum(expected))
    return float(scipy_stats.chisquare(observed, expected).pvalue)

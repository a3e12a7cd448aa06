"""Decoding reference kernels, one technique per module; shared pieces in ``_common``."""

from effbench.kernels_ref.decoding._common import DecoderBase, prefill_feeds
from effbench.kernels_ref.decoding.autoregressive import Autoregressive
from effbench.kernels_ref.decoding.prompt_lookup import PromptLookup
from effbench.kernels_ref.decoding.speculative import Speculative

__all__ = ["Autoregressive", "DecoderBase", "PromptLookup", "Speculative", "prefill_feeds"]

"""Decoding reference kernels, one technique per module; shared pieces in ``_common``."""

from effbench.kernels_ref.decoding._common import DecoderBase, prefill_feeds
from effbench.kernels_ref.decoding.aded import ADED
from effbench.kernels_ref.decoding.autoregressive import Autoregressive
from effbench.kernels_ref.decoding.dyspec import DySpec
from effbench.kernels_ref.decoding.layer_skip import LayerSkip
from effbench.kernels_ref.decoding.prompt_lookup import PromptLookup
from effbench.kernels_ref.decoding.speculative import Speculative
from effbench.kernels_ref.decoding.token_recycling import TokenRecycling
from effbench.kernels_ref.decoding.tree import DraftTree, TreeVerifyBase

__all__ = ["ADED", "Autoregressive", "DecoderBase", "DraftTree", "DySpec", "LayerSkip",
           "PromptLookup", "Speculative", "TokenRecycling", "TreeVerifyBase", "prefill_feeds"]

"""A Llama-style decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU) in plain PyTorch.

Two forward paths share the weights:
- ``forward(input_ids)``: dense causal attention over a padded ``(batch, time)`` block, no cache;
  used for training and for teacher-forced scoring of the dense baseline.
- ``forward_batch(...)``: the engine's path. Tokens of many sequences are packed into one flat
  batch (prefill chunks, single decode tokens and multi-token verification runs side by side,
  as vLLM and nano-vllm do); the linear layers see one ``(tokens, hidden)`` matrix, and attention
  is delegated per sequence to a pluggable backend over a pluggable per-sequence KV cache.

Weight names and the rotary convention match Hugging Face's ``LlamaForCausalLM`` so that the
same safetensors file loads in both (see effbench.kernels_ref.checkpoint).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from effbench.kernels_ref.protocols import AttentionBackend, AttentionMeta, KVCache, StepInfo


@dataclass(frozen=True)
class LlamaConfig:
    """Model shape, with Hugging Face's field names so config.json round-trips."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    max_position_embeddings: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    bos_token_id: int = 1
    eos_token_id: int = 2

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_hf(cls, d: dict) -> LlamaConfig:
        """Build from a Hugging Face config.json dict, ignoring keys this model does not use."""
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if isinstance(kwargs.get("eos_token_id"), list):
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        head_dim = d.get("head_dim")
        if head_dim is not None and head_dim * d["num_attention_heads"] != d["hidden_size"]:
            raise ValueError("head_dim * num_attention_heads != hidden_size is not supported")
        return cls(**kwargs)

    def to_hf(self) -> dict:
        """The config.json content that transformers' LlamaForCausalLM reads."""
        d = asdict(self)
        d.update(
            architectures=["LlamaForCausalLM"],
            model_type="llama",
            hidden_act="silu",
            attention_bias=False,
            mlp_bias=False,
            head_dim=self.head_dim,
            torch_dtype="bfloat16",
        )
        return d

    def num_parameters(self) -> int:
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        kv = self.num_key_value_heads * self.head_dim
        per_layer = h * h * 2 + h * kv * 2 + 3 * h * i + 2 * h
        emb = v * h * (1 if self.tie_word_embeddings else 2)
        return emb + self.num_hidden_layers * per_layer + h


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Rotary(nn.Module):
    """Rotary position embedding, Hugging Face's half-rotation layout."""

    def __init__(self, head_dim: int, theta: float, max_positions: int) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        t = torch.arange(max_positions, dtype=torch.float32)
        freqs = torch.outer(t, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def tables(
        self, positions: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cos and sin rows for ``positions``, gathered once and shared by every layer."""
        if positions.numel() and int(positions.max()) >= self.cos.shape[0]:
            raise ValueError(
                f"position {int(positions.max())} exceeds max_position_embeddings "
                f"{self.cos.shape[0]}"
            )
        return self.cos[positions].to(dtype), self.sin[positions].to(dtype)

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` of shape ``(..., tokens, head_dim)`` at ``positions`` ``(tokens,)``."""
        return self.rotate(x, *self.tables(positions, x.dtype))

    @staticmethod
    def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        kv = self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, kv, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, kv, bias=False)
        self.o_proj = nn.Linear(cfg.hidden_size, cfg.hidden_size, bias=False)

    def project(
        self, x: torch.Tensor, positions: torch.Tensor, rotary: Rotary
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Q, K, V of ``x`` ``(..., tokens, hidden)`` as ``(..., heads, tokens, head_dim)``."""
        lead = x.shape[:-1]
        q = self.q_proj(x).view(*lead, self.heads, self.head_dim).transpose(-3, -2)
        k = self.k_proj(x).view(*lead, self.kv_heads, self.head_dim).transpose(-3, -2)
        v = self.v_proj(x).view(*lead, self.kv_heads, self.head_dim).transpose(-3, -2)
        return rotary(q, positions), rotary(k, positions), v


class MLP(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaModel(nn.Module):
    """Decoder-only transformer; parameter names follow ``LlamaForCausalLM``'s state dict."""

    def __init__(self, cfg: LlamaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.rotary = Rotary(cfg.head_dim, cfg.rope_theta, cfg.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def forward(self, input_ids: torch.Tensor, window: int | None = None) -> torch.Tensor:
        """Logits ``(batch, time, vocab)`` of a block of ids with dense causal attention.

        ``window`` restricts each query to the last ``window`` keys (itself included): the
        sliding-window baseline that shows what a model loses without distant context.
        """
        n = input_ids.shape[-1]
        positions = torch.arange(n, device=input_ids.device)
        mask = None
        if window is not None:
            if window < 1:
                raise ValueError(f"window must be >= 1 token, got {window}")
            dist = positions[:, None] - positions[None, :]
            mask = (dist >= 0) & (dist < window)
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            attn = layer.self_attn
            q, k, v = attn.project(layer.input_layernorm(x), positions, self.rotary)
            if mask is None:
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
            x = x + attn.o_proj(o.transpose(-3, -2).flatten(-2))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x))

    def forward_batch(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        seq_lens: Sequence[int],
        caches: Sequence[KVCache],
        attention: AttentionBackend,
        logits_for: torch.Tensor | None = None,
        step: StepInfo | None = None,
        hidden: bool = False,
        layers: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Run packed tokens of several sequences through the model, filling their caches.

        ``input_ids`` and ``positions`` are flat ``(tokens,)``; ``seq_lens[i]`` tokens belong to
        sequence i, whose new keys/values are appended to ``caches[i]`` before its queries attend
        over the whole cache. ``logits_for`` selects which flat rows need logits (all if None):
        prefill chunks only need their last row, which saves the vocabulary projection.
        ``step`` is the attention metadata of this forward (built once; a plain causal one if
        None). When every sequence feeds one token, the batch takes the shared batched decode
        path: the caches' ``gather_decode`` then the backend's ``decode_padded``.
        ``layers`` runs only the first ``layers`` decoder layers (then the final norm and head);
        ``hidden`` also returns the selected rows' hidden states after the last run layer.
        """
        if sum(seq_lens) != input_ids.shape[0] or len(seq_lens) != len(caches):
            raise ValueError("seq_lens must sum to the number of tokens and match the caches")
        n_layers = len(self.layers) if layers is None else layers
        if not 1 <= n_layers <= len(self.layers):
            raise ValueError(f"layers must be in [1, {len(self.layers)}], got {layers}")
        splits = list(seq_lens)
        if step is None:
            firsts = [sum(splits[:i]) for i in range(len(splits))]
            starts = tuple(int(positions[f]) for f in firsts)
            step = StepInfo(tuple(range(len(splits))), starts, tuple(splits))
        x = self.embed_tokens(input_ids)
        batched = len(splits) > 1 and max(splits) == 1
        cos, sin = self.rotary.tables(positions, x.dtype)
        # islice, not self.layers[:n]: slicing a ModuleList builds a new module every call
        for li, layer in enumerate(itertools.islice(self.layers, n_layers)):
            attn = layer.self_attn
            wqkv, wgu = fused_weights(layer)
            qkv = F.linear(layer.input_layernorm(x), wqkv)
            hd = attn.head_dim
            q, k, v = qkv.split([attn.heads * hd, attn.kv_heads * hd, attn.kv_heads * hd], -1)
            q = Rotary.rotate(q.view(-1, attn.heads, hd).transpose(0, 1), cos, sin)
            k = Rotary.rotate(k.view(-1, attn.kv_heads, hd).transpose(0, 1), cos, sin)
            v = v.view(-1, attn.kv_heads, hd).transpose(0, 1)
            if batched:
                o = self._decode_batch(li, q, k, v, caches, attention, step)
                x = x + attn.o_proj(o)
                x = x + _fused_mlp(layer, wgu, x)
                continue
            outs = []
            for i, (qi, ki, vi, cache) in enumerate(zip(
                q.split(splits, dim=1), k.split(splits, dim=1), v.split(splits, dim=1), caches
            )):
                cache.append(li, ki, vi)
                kc, vc = cache.read(li)
                meta = AttentionMeta(li, i, step)
                if qi.shape[1] == 1:
                    outs.append(attention.decode(qi, kc, vc, meta))
                else:
                    outs.append(attention.forward(qi, kc, vc, meta))
                if cache.observes:
                    cache.observe(li, qi)
            o = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
            x = x + attn.o_proj(o.transpose(0, 1).flatten(-2))
            x = x + _fused_mlp(layer, wgu, x)
        if logits_for is not None:
            x = x[logits_for]
        logits = self.lm_head(self.norm(x))
        return (logits, x) if hidden else logits

    @staticmethod
    def _decode_batch(
        li: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        caches: Sequence[KVCache],
        attention: AttentionBackend,
        step: StepInfo,
    ) -> torch.Tensor:
        """One decode token per sequence: the caches append and pad the batch's keys/values
        (``gather_decode``; copy-free for the pooled full cache), then one ``decode_padded``.

        Every backend and cache takes this same path, so a technique's engine speedup is
        measured on the same batched path as its baseline. Returns ``(tokens, hidden)``.
        """
        kp, vp, lengths = type(caches[0]).gather_decode(caches, li, k, v)
        qb = q.transpose(0, 1).unsqueeze(2)
        o = attention.decode_padded(qb, kp, vp, lengths, AttentionMeta(li, -1, step))
        for i, cache in enumerate(caches):
            if cache.observes:
                cache.observe(li, qb[i])
        return o.squeeze(2).flatten(-2)


def fused_weights(layer: DecoderLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """Q/K/V and gate/up weights packed into one matrix each, for the inference path.

    One matmul instead of three (and two) per layer matters at small batch, where per-call
    overhead dominates. The packed copies are cached on the layer and rebuilt when any source
    weight changes (its storage or version), so training and ``.to()`` stay correct; the
    Hugging Face parameter names and the state dict are untouched.
    """
    a, m = layer.self_attn, layer.mlp
    ws = (a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, m.gate_proj.weight, m.up_proj.weight)
    key = tuple((w.data_ptr(), w._version) for w in ws)
    cached = layer.__dict__.get("_fused")
    if cached is None or cached[0] != key:
        with torch.no_grad():
            cached = (key, torch.cat(ws[:3]), torch.cat(ws[3:]))
        layer.__dict__["_fused"] = cached
    return cached[1], cached[2]


def _fused_mlp(layer: DecoderLayer, wgu: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(layer.post_attention_layernorm(x), wgu).chunk(2, dim=-1)
    return layer.mlp.down_proj(F.silu(gate) * up)

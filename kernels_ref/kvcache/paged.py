"""A pool-level KV manager: fixed-size blocks, per-sequence block tables, prefix sharing.

``BlockManager`` is the bookkeeping vLLM's PagedAttention and nano-vllm's block manager do: a
pool of ``num_blocks`` blocks of ``block_size`` tokens, a block table per sequence, and a
hash-chained index of full blocks (the hash of a block covers every token before it, so equal
hashes mean equal prefixes) with reference counts, so sequences with a common prompt prefix
share its blocks. Free memory is what the scheduler sees (``free_tokens``).

``PagedKVCache`` stores keys and values in the manager's blocks (one ``(num_blocks, kv_heads,
block_size, head_dim)`` tensor per layer and per K/V, shared by all sequences of a factory);
``read`` gathers a sequence's blocks. ``nbytes`` counts its tokens; internal fragmentation
(allocated but unused slots of its last block) is reported apart by ``allocated_nbytes``.
Written for this project after nano-vllm's design; no code is shared with it.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from effbench.kernels_ref.kvcache._common import (
    CacheFactoryBase,
    KVCacheBase,
    check_kv,
    check_layer,
    check_truncate,
)
from effbench.kernels_ref.protocols import CacheLayout, MemoryState


def chain_hash(prev: str, tokens: Sequence[int]) -> str:
    """Hash of a full block given the hash of everything before it (the prefix chain)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(prev.encode())
    h.update(b",".join(str(t).encode() for t in tokens))
    return h.hexdigest()


@dataclass
class Block:
    index: int
    refs: int = 0
    hash: str = ""


@dataclass
class BlockTable:
    blocks: list[int] = field(default_factory=list)
    tokens: int = 0


class BlockManager:
    """Allocates blocks to sequences; full blocks are indexed by prefix hash and shared."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(
                f"num_blocks and block_size must be >= 1, got {num_blocks} and {block_size}"
            )
        self.block_size = block_size
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: deque[int] = deque(range(num_blocks))
        self.by_hash: dict[str, int] = {}
        self.tables: dict[int, BlockTable] = {}
        self.lookup_tokens = 0
        self.hit_tokens = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def free_blocks(self) -> int:
        return len(self.free)

    @property
    def free_tokens(self) -> int:
        return self.free_blocks * self.block_size

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _take(self) -> int:
        if not self.free:
            raise MemoryError(f"KV block pool exhausted ({self.num_blocks} blocks)")
        idx = self.free.popleft()
        blk = self.blocks[idx]
        if blk.hash and self.by_hash.get(blk.hash) == idx:
            del self.by_hash[blk.hash]  # a cached block evicted for reuse
        blk.refs, blk.hash = 1, ""
        return idx

    def allocate(self, seq_id: int, token_ids: Sequence[int] = ()) -> int:
        """Open a sequence; full blocks of ``token_ids`` already in the pool are shared.

        Returns how many leading tokens are already cached (a multiple of ``block_size``),
        whose keys/values need not be computed again.
        """
        if seq_id in self.tables:
            raise ValueError(f"sequence {seq_id} is already allocated")
        table = BlockTable()
        prev, cached = "", 0
        n_full = len(token_ids) // self.block_size
        for b in range(n_full):
            chunk = token_ids[b * self.block_size : (b + 1) * self.block_size]
            prev = chain_hash(prev, chunk)
            idx = self.by_hash.get(prev)
            if idx is None:
                break
            blk = self.blocks[idx]
            if blk.refs == 0:
                self.free.remove(idx)
            blk.refs += 1
            table.blocks.append(idx)
            cached += self.block_size
        self.lookup_tokens += len(token_ids)
        self.hit_tokens += cached
        table.tokens = cached
        self.tables[seq_id] = table
        return cached

    def append(self, seq_id: int, n: int, token_ids: Sequence[int] | None = None) -> None:
        """Grow a sequence by ``n`` tokens, taking blocks as needed. With ``token_ids`` (the
        whole sequence so far, these tokens included), blocks that fill up are indexed for
        sharing.
        """
        table = self.tables[seq_id]
        need = self.blocks_for(table.tokens + n) - len(table.blocks)
        if need > self.free_blocks:
            raise MemoryError(
                f"sequence {seq_id} needs {need} more block(s), {self.free_blocks} free"
            )
        for _ in range(need):
            table.blocks.append(self._take())
        before = table.tokens // self.block_size
        table.tokens += n
        if token_ids is not None:
            prev = self.blocks[table.blocks[before - 1]].hash if before else ""
            for b in range(before, table.tokens // self.block_size):
                chunk = token_ids[b * self.block_size : (b + 1) * self.block_size]
                prev = chain_hash(prev, chunk)
                blk = self.blocks[table.blocks[b]]
                blk.hash = prev
                self.by_hash.setdefault(prev, blk.index)

    def truncate(self, seq_id: int, tokens: int) -> None:
        """Shrink a sequence to ``tokens``, returning whole blocks past it to the pool."""
        table = self.tables[seq_id]
        keep = self.blocks_for(tokens)
        for idx in table.blocks[keep:]:
            self._release(idx)
        del table.blocks[keep:]
        table.tokens = min(table.tokens, tokens)

    def free_seq(self, seq_id: int) -> None:
        """Close a sequence; its blocks go back to the pool (hashed ones stay findable)."""
        for idx in self.tables.pop(seq_id).blocks:
            self._release(idx)

    def _release(self, idx: int) -> None:
        blk = self.blocks[idx]
        blk.refs -= 1
        if blk.refs == 0:
            self.free.append(idx)

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.lookup_tokens if self.lookup_tokens else 0.0


class PagedKVCache(KVCacheBase):
    """One sequence whose keys and values live in the blocks of a shared ``BlockManager``."""

    def __init__(self, factory: PagedKVCacheFactory, seq_id: int) -> None:
        self.factory = factory
        self.layout = factory.layout
        self.seq_id = seq_id
        factory.manager.allocate(seq_id)
        self.lengths = [0] * self.layout.num_layers

    def _slots(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(block index, offset) of token positions ``[start, stop)``."""
        bs = self.factory.manager.block_size
        table = torch.tensor(self.factory.manager.tables[self.seq_id].blocks, dtype=torch.long)
        pos = torch.arange(start, stop)
        return table[pos // bs].to(self.layout.device), (pos % bs).to(self.layout.device)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        check_layer(self.layout, layer)
        check_kv(self.layout, k, v)
        start, n = self.lengths[layer], k.shape[1]
        manager = self.factory.manager
        grow = start + n - manager.tables[self.seq_id].tokens
        if grow > 0:
            manager.append(self.seq_id, grow)
        blocks, offsets = self._slots(start, start + n)
        self.factory.k[layer][blocks, :, offsets] = k.transpose(0, 1).to(self.factory.dtype)
        self.factory.v[layer][blocks, :, offsets] = v.transpose(0, 1).to(self.factory.dtype)
        self.lengths[layer] = start + n

    def read(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        check_layer(self.layout, layer)
        blocks, offsets = self._slots(0, self.lengths[layer])
        k = self.factory.k[layer][blocks, :, offsets].transpose(0, 1)
        v = self.factory.v[layer][blocks, :, offsets].transpose(0, 1)
        return k.to(self.layout.dtype), v.to(self.layout.dtype)

    def length(self, layer: int = 0) -> int:
        check_layer(self.layout, layer)
        return self.lengths[layer]

    def truncate(self, length: int) -> None:
        check_truncate(length)
        self.lengths = [min(n, length) for n in self.lengths]
        self.factory.manager.truncate(self.seq_id, max(self.lengths))

    def nbytes(self) -> int:
        elem = self.factory.k[0].element_size()
        return 2 * self.layout.kv_heads * self.layout.head_dim * elem * sum(self.lengths)

    def allocated_nbytes(self) -> int:
        """Bytes of the blocks this sequence holds (its last block's unused slots included)."""
        blocks = len(self.factory.manager.tables[self.seq_id].blocks)
        per_block = self.factory.block_bytes
        return blocks * per_block

    def read_cost(self) -> tuple[float, float]:
        """Reading gathers every token's keys and values once (a copy out of the blocks)."""
        return float(2 * self.nbytes()), 0.0

    def close(self) -> None:
        if self.seq_id in self.factory.manager.tables:
            self.factory.manager.free_seq(self.seq_id)


class PagedKVCacheFactory(CacheFactoryBase):
    """Makes ``PagedKVCache``s over one block pool (created on first use from the layout).

    ``num_blocks * block_size`` tokens fit in all; ``memory()`` reports the pool's capacity,
    so the engine's budget sees how much KV memory is left.
    """

    bounded = True

    def __init__(self, block_size: int = 16, num_blocks: int = 1024,
                 dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if block_size < 1 or num_blocks < 1:
            raise ValueError(
                f"block_size and num_blocks must be >= 1, got {block_size} and {num_blocks}"
            )
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.dtype_arg = dtype
        self.layout: CacheLayout | None = None
        self._next_seq = 0

    def _init_pool(self, layout: CacheLayout) -> None:
        self.layout = layout
        self.dtype = self.dtype_arg or layout.dtype
        self.manager = BlockManager(self.num_blocks, self.block_size)
        shape = (self.num_blocks, layout.kv_heads, self.block_size, layout.head_dim)
        self.k = [torch.zeros(shape, dtype=self.dtype, device=layout.device)
                  for _ in range(layout.num_layers)]
        self.v = [torch.zeros(shape, dtype=self.dtype, device=layout.device)
                  for _ in range(layout.num_layers)]
        elem = self.k[0].element_size()
        self.block_bytes = 2 * layout.num_layers * layout.kv_heads * self.block_size * (
            layout.head_dim * elem)

    def new_cache(self, layout: CacheLayout) -> PagedKVCache:
        if self.layout != layout:
            self._init_pool(layout)
        self._next_seq += 1
        cache = PagedKVCache(self, self._next_seq)
        weakref.finalize(cache, _free_if_open, self.manager, cache.seq_id)
        return self.track(cache)

    def memory(self) -> MemoryState:
        if self.layout is None:
            return MemoryState(0, None)
        used = (self.num_blocks - self.manager.free_blocks) * self.block_bytes
        return MemoryState(used, self.num_blocks * self.block_bytes)


def _free_if_open(manager: Any, seq_id: int) -> None:
    if seq_id in manager.tables:
        manager.free_seq(seq_id)

"""A model of PyTorch's CUDA caching allocator: the memory it *reserves* for a sequence of
allocations and frees (what ``torch.cuda.max_memory_reserved`` reports), so that the exact
tensor accounting of :mod:`peftbench.core.memtrack` predicts the figure a GPU run measures."""

from __future__ import annotations

import bisect
from typing import Any


class CachingAllocatorModel:
    """PyTorch's CUDA caching allocator (``c10/cuda/CUDACachingAllocator.cpp``, default
    settings: no ``max_split_size_mb``, no expandable segments, one stream), replayed on a
    sequence of allocations and frees to give the memory it *reserves* from the device.

    The rules modelled, with the allocator's constants:

    * a request is rounded up to a multiple of 512 bytes (``kMinBlockSize``);
    * requests up to 1 MiB (``kSmallSize``) are served from the small pool, whose segments
      are 2 MiB (``kSmallBuffer``); larger ones from the large pool, whose new segments are
      20 MiB (``kLargeBuffer``) for requests under 10 MiB (``kMinLargeAlloc``) and the request
      rounded up to 2 MiB (``kRoundLarge``) otherwise;
    * a request takes the smallest cached free block of its pool that fits (best fit, the
      lowest address among equal sizes), split when the rest is at least 512 bytes (small
      pool) or more than 1 MiB (large pool), else handed out whole;
    * a freed block merges with free neighbours of its segment and stays cached: reserved
      memory only grows, until :meth:`empty_cache` returns the segments that are wholly free;
    * with a ``capacity`` (bytes the device can give), a segment that does not fit makes the
      allocator return its wholly free segments and try again, as on a full GPU.

    What it cannot see: memory a kernel allocates for itself (cuBLAS and cuFFT workspaces,
    the CUDA context) and the addresses the driver picks (new segments get increasing ones).
    """

    MIN_BLOCK = 512
    SMALL_SIZE = 1 << 20
    SMALL_BUFFER = 2 << 20
    LARGE_BUFFER = 20 << 20
    MIN_LARGE_ALLOC = 10 << 20
    ROUND_LARGE = 2 << 20

    def __init__(self, capacity: int | None = None) -> None:
        self.capacity = capacity
        # Free blocks per pool (True: small), sorted by (size, address).
        self._free: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
        # address -> [size, allocated, previous block's address, next block's address, small]
        self._blocks: dict[int, list[Any]] = {}
        self._top = 0
        self.reserved = 0
        self.allocated = 0
        self.peak_reserved = 0
        self.peak_allocated = 0

    @classmethod
    def round_size(cls, size: int) -> int:
        return max(cls.MIN_BLOCK, -(-size // cls.MIN_BLOCK) * cls.MIN_BLOCK)

    @classmethod
    def segment_size(cls, size: int) -> int:
        if size <= cls.SMALL_SIZE:
            return cls.SMALL_BUFFER
        if size < cls.MIN_LARGE_ALLOC:
            return cls.LARGE_BUFFER
        return -(-size // cls.ROUND_LARGE) * cls.ROUND_LARGE

    def reset_peak(self) -> None:
        """``torch.cuda.reset_peak_memory_stats()``: the peaks restart from the current state."""
        self.peak_reserved, self.peak_allocated = self.reserved, self.allocated

    def malloc(self, size: int) -> int:
        """Serve ``size`` bytes; returns the block's address (0 for an empty request)."""
        if size == 0:
            return 0
        size = self.round_size(size)
        small = size <= self.SMALL_SIZE
        pool = self._free[small]
        index = bisect.bisect_left(pool, (size, -1))
        if index < len(pool):
            _, address = pool.pop(index)
        else:
            address = self._new_segment(size, small)
        block = self._blocks[address]
        rest = block[0] - size
        if (small and rest >= self.MIN_BLOCK) or (not small and rest > self.SMALL_SIZE):
            remainder = address + size
            self._blocks[remainder] = [rest, False, address, block[3], small]
            if block[3] is not None:
                self._blocks[block[3]][2] = remainder
            block[0], block[3] = size, remainder
            bisect.insort(pool, (rest, remainder))
        block[1] = True
        self.allocated += block[0]
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return address

    def _new_segment(self, size: int, small: bool) -> int:
        segment = self.segment_size(size)
        if self.capacity is not None and self.reserved + segment > self.capacity:
            self.empty_cache()
        address = self._top + 1
        self._top += segment + self.SMALL_BUFFER  # a gap: segments are never neighbours
        self._blocks[address] = [segment, False, None, None, small]
        self.reserved += segment
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        return address

    def free(self, address: int) -> None:
        """Return the block at ``address`` to its pool, merged with free neighbours."""
        if address == 0:
            return
        block = self._blocks[address]
        block[1] = False
        self.allocated -= block[0]
        pool = self._free[block[4]]
        for neighbour in (block[2], block[3]):
            if neighbour is None or self._blocks[neighbour][1]:
                continue
            other = self._blocks[neighbour]
            pool.pop(bisect.bisect_left(pool, (other[0], neighbour)))
            low, high = (neighbour, address) if neighbour < address else (address, neighbour)
            merged, gone = self._blocks[low], self._blocks.pop(high)
            merged[0] += gone[0]
            merged[3] = gone[3]
            if gone[3] is not None:
                self._blocks[gone[3]][2] = low
            address, block = low, merged
        bisect.insort(pool, (block[0], address))

    def empty_cache(self) -> None:
        """``torch.cuda.empty_cache()``: return every wholly free segment to the device."""
        for small, pool in self._free.items():
            keep = []
            for size, address in pool:
                block = self._blocks[address]
                if block[2] is None and block[3] is None:
                    del self._blocks[address]
                    self.reserved -= size
                else:
                    keep.append((size, address))
            self._free[small] = keep

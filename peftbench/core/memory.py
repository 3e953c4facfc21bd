"""Peak-memory measurement that can be reset between phases (training, evaluation).

CUDA: the caching allocator's peak *reserved* bytes (what other processes cannot use, the figure
the published benchmark reports) and peak *allocated* bytes, both relative to a baseline taken
before the model is loaded, so they include the weights.

CPU: peak resident set size (VmHWM). Linux lets a process reset its high-water mark by writing
``5`` to ``/proc/self/clear_refs``, which gives a true per-phase peak without a sampling thread.
The baseline is the RSS after the model was loaded, so CPU figures are the *extra* memory of a
phase (activations, gradients, optimizer state), not including the weights. That difference in
meaning is recorded in ``memory_measure``.
"""

from __future__ import annotations

from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not found in {_STATUS}")


def cpu_peak_resettable() -> bool:
    """True when this kernel lets us reset the RSS high-water mark."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


class MemoryTracker:
    """Per-phase peak memory on ``device`` ('cuda...' or 'cpu')."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.device = device
        self.measure = "cuda_reserved" if self.cuda else "cpu_rss_above_loaded_model"
        self.baseline = 0
        if not self.cuda and not cpu_peak_resettable():
            raise RuntimeError("cannot reset peak RSS (/proc/self/clear_refs); Linux is required")

    def set_baseline(self) -> None:
        """Call before loading the model (CUDA) or right after (CPU): see the module docstring."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_reserved(self.device)
            self.baseline_alloc = torch.cuda.memory_allocated(self.device)
        else:
            self.baseline = _status_kb("VmRSS") * 1024
        self.reset()

    def reset(self) -> None:
        """Start a new phase: forget the peak so far."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _CLEAR_REFS.write_text("5")

    def peak(self) -> tuple[int, int | None]:
        """(peak bytes above baseline, peak allocated bytes above baseline or None on CPU)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)
            reserved = torch.cuda.max_memory_reserved(self.device) - self.baseline
            allocated = torch.cuda.max_memory_allocated(self.device) - self.baseline_alloc
            return reserved, allocated
        return max(0, _status_kb("VmHWM") * 1024 - self.baseline), None

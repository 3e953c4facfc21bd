"""The categories of the live-tensor account (:mod:`peftbench.core.memtrack`), torch-free so
that the analysis can name the summary columns without importing torch."""

from __future__ import annotations

#: What a tensor storage live at the peak of a training step is, in summary order.
CATEGORIES = (
    "frozen_params",
    "trainable_params",
    "gradients",
    "optimizer_state",
    "activations",
    "temporaries",
)

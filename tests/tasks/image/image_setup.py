"""What the image tests share: the test-profile config and the metrics that may differ between
identical runs (the tiny setup itself is conftest.py's fixture ``tiny_image``)."""

from __future__ import annotations

import yaml
from paths import REPO
from tiny import TIMING_KEYS

from peftbench.core.config import deep_merge

CONFIG = deep_merge(
    yaml.safe_load((REPO / "config/config.yaml").read_text()),
    yaml.safe_load((REPO / "config/test.yaml").read_text()),
)["image"]
#: Timings and memory: the only metrics two runs of the same config and seed may differ in (the
#: math task's, which an image result partly has, and the image generation time).
TIMING = TIMING_KEYS | {
    "generation_time_s",
    "infer_images_per_s",
    "infer_merged_images_per_s",
    "infer_base_images_per_s",
}

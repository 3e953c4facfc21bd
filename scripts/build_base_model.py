"""Snakemake entry point: pretrain the embedded base model (rule math_base_model)."""

import json
import os
import sys
from pathlib import Path

# Threads that spin while waiting make a 2-core machine 10x slower when two jobs share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.workflow import redirect_log  # noqa: E402
from peftbench.tasks.math.embedded_lm import build_embedded_base  # noqa: E402

redirect_log(snakemake)  # noqa: F821
info = build_embedded_base(
    snakemake.params.model["embedded"],  # noqa: F821
    Path(snakemake.input[0]),  # noqa: F821
    Path(snakemake.output[0]),  # noqa: F821
    snakemake.threads,  # noqa: F821
)
print(json.dumps(info, indent=2))

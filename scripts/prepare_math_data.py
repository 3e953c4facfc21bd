"""Snakemake entry point: prepare the math task's data splits (rule math_prepare_data)."""

import os
import sys
from pathlib import Path

# Threads that spin while waiting make a 2-core machine 10x slower when two jobs share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.workflow import redirect_log  # noqa: E402
from peftbench.tasks.math.data import prepare_data  # noqa: E402

redirect_log(snakemake)  # noqa: F821
prepare_data(snakemake.params.data, Path(snakemake.output[0]).parent)  # noqa: F821

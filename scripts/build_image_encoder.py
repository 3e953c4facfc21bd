"""Snakemake entry point: train the embedded similarity encoder (rule image_encoder)."""

import json
import os
import sys
from pathlib import Path

# Threads that spin while waiting make a 2-core machine 10x slower when two jobs share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.io import atomic_dir  # noqa: E402
from peftbench.core.workflow import redirect_log  # noqa: E402
from peftbench.tasks.image.similarity import train_embedded_encoder  # noqa: E402

redirect_log(snakemake)  # noqa: F821
with atomic_dir(snakemake.output[0]) as out:  # noqa: F821
    info = train_embedded_encoder(snakemake.params.encoder["embedded"], out, snakemake.threads)  # noqa: F821
print(json.dumps({k: v for k, v in info.items() if k != "loss_curve"}, indent=2))

"""Snakemake entry point: train the embedded similarity encoder (rule image_encoder)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

# A local run hands the job to the workflow's worker, which has the training stack imported
# already (peftbench/core/worker.py); without one, delegate returns and the job runs here.
from peftbench.core.worker import delegate  # noqa: E402

delegate(__real_file__)  # noqa: F821 - set by Snakemake's preamble: this job's script file

from peftbench.core import progress  # noqa: E402
from peftbench.core.io import atomic_dir  # noqa: E402
from peftbench.core.workflow import redirect_log  # noqa: E402
from peftbench.tasks.image.similarity import train_embedded_encoder  # noqa: E402

# Minutes of training: worth a few lines on the console (peftbench/core/progress.py).
redirect_log(snakemake, progress_lines=True)  # noqa: F821
with atomic_dir(snakemake.output[0]) as out:  # noqa: F821
    info = train_embedded_encoder(snakemake.params.encoder["embedded"], out, snakemake.threads)  # noqa: F821
print(json.dumps({k: v for k, v in info.items() if k != "loss_curve"}, indent=2))
separation = info["separation"]  # how far apart the concept's images and the others' embed
progress.finish(
    f"concept similarity {separation['concept_vs_concept']:.3f}, "
    f"others {separation['other_vs_concept']:.3f}"
)

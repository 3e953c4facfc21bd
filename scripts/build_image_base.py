"""Snakemake entry point: pretrain the embedded image model (rule image_base_model)."""

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
from peftbench.tasks.image.embedded import build_embedded_image_base  # noqa: E402

# Minutes of pretraining: worth a few lines on the console (peftbench/core/progress.py).
redirect_log(snakemake, progress_lines=True)  # noqa: F821
with atomic_dir(snakemake.output[0]) as out:  # noqa: F821
    info = build_embedded_image_base(snakemake.params.model["embedded"], out, snakemake.threads)  # noqa: F821
print(json.dumps({k: v for k, v in info.items() if k != "loss_curve"}, indent=2))
progress.finish(f"final loss {info['loss_curve'][-1]['loss']:.4f}")

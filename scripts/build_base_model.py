"""Snakemake entry point: pretrain the embedded base model (rule math_base_model)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

# A local run hands the job to the workflow's worker, which has the training stack imported
# already (peftbench/core/worker.py); without one, delegate returns and the job runs here.
from peftbench.core.worker import delegate  # noqa: E402

delegate(__real_file__)  # noqa: F821 - set by Snakemake's preamble: this job's script file

from peftbench.core import progress  # noqa: E402
from peftbench.core.workflow import redirect_log  # noqa: E402
from peftbench.tasks.math.embedded_lm import build_embedded_base  # noqa: E402

# Minutes of pretraining: worth a few lines on the console (peftbench/core/progress.py).
redirect_log(snakemake, progress_lines=True)  # noqa: F821
info = build_embedded_base(
    snakemake.params.model["embedded"],  # noqa: F821
    Path(snakemake.input[0]),  # noqa: F821
    Path(snakemake.output[0]),  # noqa: F821
    snakemake.threads,  # noqa: F821
)
print(json.dumps(info, indent=2))
progress.finish(f"final loss {info['final_loss']:.4f}, skill {info['skill']:.3f}")

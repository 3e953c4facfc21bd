"""Snakemake entry point: the image task's base reference (rule image_base_reference).

The base model's drift and sample images and the encoder's reference embeddings, computed once
with the task's default generation settings on the device and thread count of a training job
(see :mod:`peftbench.tasks.image.reference`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[2]))  # noqa: F821

# A local run hands the job to the workflow's worker, which has the training stack imported
# already (peftbench/core/worker.py); without one, delegate returns and the job runs here.
from peftbench.core.worker import delegate  # noqa: E402

delegate(__real_file__)  # noqa: F821 - set by Snakemake's preamble: this job's script file

import torch  # noqa: E402

from peftbench.core.io import atomic_dir  # noqa: E402
from peftbench.core.runs import pick_device  # noqa: E402
from peftbench.core.workflow import redirect_log  # noqa: E402
from peftbench.tasks.image.reference import save_reference  # noqa: E402
from peftbench.tasks.image.run import compute_reference  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
torch.set_num_threads(sm.threads)  # as a training job does: CPU sums may round by thread count
inputs = {key: Path(value) for key, value in sm.input.items()}
reference = compute_reference(sm.params.task_cfg, sm.params.training, inputs, pick_device())
with atomic_dir(sm.output[0]) as out:
    save_reference(Path(out), reference)
print(reference.settings)

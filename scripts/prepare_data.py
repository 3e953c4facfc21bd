"""Snakemake entry point: prepare one task's data folder (rule prepare_data).

The task's spec names its data module, whose ``prepare(data_cfg, out_dir)`` writes the folder;
it is written next to the output and renamed onto it when complete.
"""

import os
import sys
from pathlib import Path

# Threads that spin while waiting make a 2-core machine 10x slower when two jobs share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.io import atomic_dir  # noqa: E402
from peftbench.core.workflow import redirect_log, register_task_packages  # noqa: E402
from peftbench.tasks import registry  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
register_task_packages(sm)
task = sm.wildcards.task
data = registry.import_module(registry.get(task).data_module, task)
with atomic_dir(sm.output[0]) as out:
    data.prepare(sm.params.data, out)

"""Snakemake entry point of rule math_base_reference: the work every math run shares, once.

It lives in the task package (not scripts/) because only this task's rules.smk uses it;
importing it does nothing, the job runs only under Snakemake's ``snakemake`` object.
"""

import json
import sys
from pathlib import Path
from typing import Any


def main(sm: Any) -> None:
    sys.path.insert(0, str(Path(sm.scriptdir).parents[2]))
    from peftbench.core.io import atomic_dir
    from peftbench.core.runs import RunContext
    from peftbench.core.workflow import redirect_log
    from peftbench.tasks.math.reference import build_reference

    redirect_log(sm)
    inputs = {key: Path(value) for key, value in sm.input.items()}
    with atomic_dir(sm.output[0]) as tmp:
        ctx = RunContext(
            task="math",
            method="base",
            name="reference",
            seed=0,
            exp_dir=None,
            params=sm.params.training,
            task_cfg=sm.params.task_cfg,
            inputs=inputs,
            out_dir=Path(tmp),
            threads=sm.threads,
            progress=False,
        )
        manifest = build_reference(ctx)
    print(json.dumps(manifest, indent=2))


if "snakemake" in globals():
    sys.path.insert(0, str(Path(snakemake.scriptdir).parents[2]))  # noqa: F821
    # A local run hands the job to the workflow's worker (peftbench/core/worker.py).
    from peftbench.core.worker import delegate

    delegate(__real_file__)  # noqa: F821 - set by Snakemake's preamble: this job's script file
    main(snakemake)  # noqa: F821

"""Snakemake entry point: prepare the image task's data (rule image_prepare_data)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.io import atomic_dir  # noqa: E402
from peftbench.core.workflow import redirect_log  # noqa: E402
from peftbench.tasks.image.data import prepare_data  # noqa: E402

redirect_log(snakemake)  # noqa: F821
with atomic_dir(snakemake.output[0]) as out:  # noqa: F821
    prepare_data(snakemake.params.data, out)  # noqa: F821

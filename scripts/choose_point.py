"""Snakemake entry point (checkpoint choose_point): the grid point of one experiment that runs
the task's other seeds under ``search_seeds: first``.

Reads the first seed's result of every point and writes ``{"experiment", "run", "point",
"valid"}``: the point :func:`peftbench.analysis.search.grid_table` chooses, on validation only,
exactly as the summary will (it compares points on the seeds they all ran, here the first).
"""

import json
import os
import sys
from pathlib import Path

# Threads that spin while waiting make a 2-core machine 10x slower when two jobs share it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(snakemake.scriptdir).parent))  # noqa: F821

from peftbench.core.workflow import forbid_imports  # noqa: E402

# Reads result files only: torch-free by contract, checked while it runs.
forbid_imports("choose_point")

from peftbench.analysis.aggregate import load_results, summarize  # noqa: E402
from peftbench.analysis.search import grid_table  # noqa: E402
from peftbench.core.io import atomic_path  # noqa: E402
from peftbench.core.workflow import redirect_log, register_task_packages  # noqa: E402

sm = snakemake  # noqa: F821
redirect_log(sm)
register_task_packages(sm)  # tasks outside the package (config task_packages)
experiment = f"{sm.wildcards.method}/{sm.wildcards.name}"
grid = grid_table(summarize(load_results(sm.input), choose_points=False))
chosen = grid[grid["chosen"] & (grid["experiment"] == experiment)]
if len(chosen) != 1:
    raise SystemExit(f"{experiment}: no grid point to choose among {list(sm.input)}")
row = chosen.iloc[0]
choice = {
    "experiment": experiment,
    "run": str(row["run"]),
    "point": str(row["point"]),
    "valid": None if row["valid"] != row["valid"] else float(row["valid"]),
}
print(grid[grid["experiment"] == experiment].to_string(index=False))
print(f"chosen: {choice['run']}")
with atomic_path(sm.output[0]) as tmp:
    Path(tmp).write_text(json.dumps(choice, indent=2) + "\n")

"""The local worker in a real run of both tasks: training jobs are forked from it, and every
number is the same as when each job imports the libraries itself (config local_worker: false)."""

from __future__ import annotations

import json
from pathlib import Path

from tiny import TIMING_KEYS
from wfutil import copy_workflow, snakemake

#: What measures time or memory, in both tasks' metrics (the image task times its generation).
VOLATILE = TIMING_KEYS | {
    "generation_time_s",
    "infer_images_per_s",
    "infer_merged_images_per_s",
    "infer_base_images_per_s",
}


def results(workdir: Path) -> dict[str, dict]:
    return {
        str(path.relative_to(workdir)): json.loads(path.read_text())
        for path in sorted(workdir.glob("results/*/runs/*/*/seed*/result.json"))
    }


def test_worker_results_equal_own_process_results(tmp_path: Path) -> None:
    runs = {}
    for local_worker in ("true", "false"):
        workdir = copy_workflow(tmp_path / local_worker)
        proc = snakemake(workdir, extra_config=f"local_worker: {local_worker}\n")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
        runs[local_worker] = results(workdir)
    served = (tmp_path / "true/.snakemake/peftbench/worker-threads-1.log").read_text()
    assert served.count("train_experiment.py") == len(runs["true"]) >= 6
    # Both tasks' training jobs, with the modules the first jobs imported lazily (diffusers'
    # model classes) imported in the worker for the later ones.
    assert {r["task"] for r in runs["true"].values()} == {"math", "image"}
    assert "modules that a job imported" in served
    assert "refused" not in served
    assert not list((tmp_path / "false/.snakemake/peftbench").glob("worker*"))

    assert runs["true"].keys() == runs["false"].keys()
    for name, forked in runs["true"].items():
        own = runs["false"][name]
        assert (forked["provenance"]["process"], own["provenance"]["process"]) == ("worker", "own")
        assert forked["status"] == own["status"] == "success", name
        for key in own["metrics"].keys() - VOLATILE:
            assert forked["metrics"][key] == own["metrics"][key], (name, key)
        assert forked["curves"] == own["curves"], name
        assert (
            forked["provenance"]["hardware"]["numerics"]
            == own["provenance"]["hardware"]["numerics"]
        )

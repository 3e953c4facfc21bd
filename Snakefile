# peftbench: benchmark PEFT methods and render quality-vs-memory Pareto frontiers.
# Run: snakemake --cores all --resources gpu=1   (see README.md)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# Config checks, the task registry (with config task_packages) and the helpers of every rule.
include: "rules/common.smk"


# Same bits on any x86-64 CPU with AVX2: jobs inherit the pinned kernel choices (config
# cpu_numerics; peftbench/core/numerics.py). Set before anything imports torch.
from peftbench.core.numerics import apply as apply_cpu_numerics  # noqa: E402

apply_cpu_numerics(config.get("cpu_numerics"))


# The generic rules, with the task as a wildcard: data preparation and training.
include: "rules/train.smk"


# A task's own rules (its spec's `rules`: embedded base models, encoders) exist only when it
# runs, so a math-only run never builds the image models.
for task_rules in [task_folder(t) / s.rules for t, s in SPECS.items() if s.rules]:

    include: task_rules


# The GPU memory each experiment is predicted to need (no training depends on it).
include: "rules/estimate.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),
        # Every run's result.json is a target of its own: Snakemake rebuilds a missing file only
        # when a target needs it, so without this a deleted result would stay deleted while the
        # tables that read it look up to date.
        [path for task in SPECS for path in planned_results(task)],
        # With search_seeds first, the chosen points' other seeds follow a checkpoint: functions,
        # so that the runs known now are planned (and start) before the choice.
        *chosen_inputs(),


# The checks that the targets above ran are done: the libraries they imported stay out of the
# garbage collector's passes from now on, which speeds the DAG construction that follows.
task_checks.freeze_heap()


onstart:
    start_local_worker()


onsuccess:
    stop_local_worker()
    report_failures()


onerror:
    stop_local_worker()

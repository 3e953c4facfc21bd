# peftbench: benchmark PEFT methods and render quality-vs-memory Pareto frontiers.
# Run: snakemake --cores all --resources gpu=1   (see README.md)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


# Config checks, the task registry (with config task_packages) and the helpers of every rule.
include: "rules/common.smk"
# The generic rules, with the task as a wildcard: data preparation and training.
include: "rules/train.smk"


# A task's own rules (its spec's `rules`: embedded base models, encoders) exist only when it
# runs, so a math-only run never builds the image models.
for task_rules in [task_folder(t) / s.rules for t, s in SPECS.items() if s.rules]:

    include: task_rules


include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),


onsuccess:
    report_failures()

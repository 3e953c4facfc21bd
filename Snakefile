# peftbench: benchmark PEFT methods and render quality-vs-memory Pareto frontiers.
# Run: snakemake --cores all --resources gpu=1   (see README.md)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"


# A task's rules exist only when it runs, so a math-only run never builds the image models.
if "math" in config["tasks"]:

    include: "rules/math.smk"


if "image" in config["tasks"]:

    include: "rules/image.smk"


include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(),


onsuccess:
    report_failures()

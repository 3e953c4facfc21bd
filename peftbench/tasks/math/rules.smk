# The math task's own rule (TaskSpec.rules; the Snakefile includes it when the task runs): the
# embedded default pretrains its base model on the prepared data. Data preparation and training
# are the generic rules of rules/train.smk.
from peftbench.tasks.math import EMBEDDED_BASE  # noqa: E402


rule math_base_model:
    input:
        "results/math/data",
    output:
        directory(EMBEDDED_BASE),
    log:
        "logs/math/base_model.log",
    conda:
        "../../../envs/train.yaml"
    threads: 2
    params:
        model=config["math"]["base_model"],
        code=code_hash("scripts/build_base_model.py"),
        libraries=library_versions(),
    script:
        "../../../scripts/build_base_model.py"

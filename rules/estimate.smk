# Predicted GPU memory of every selected experiment of a task, before any run and without a GPU
# or weights (peftbench.core.estimate: the base architecture on the meta device, wrapped with the
# experiment's adapter, a few training steps accounted). An experiment that cannot be estimated
# is recorded with its error; the job does not fail. The summary reads the predictions
# (predicted_memory_gb); they are no input of training, and the priority below lets every other
# ready job that fits take a free core first.
rule estimate_memory:
    input:
        unpack(estimate_inputs),
    output:
        f"results/{{task}}/{ESTIMATE_FILE}",
    log:
        "logs/{task}/estimate_memory.log",
    wildcard_constraints:
        task="|".join(estimated_tasks()),
    priority: -1
    conda:
        "../envs/train.yaml"
    threads: 1
    params:
        task_cfg=estimate_task_config,
        experiments=lambda wildcards: task_experiments(wildcards.task),
        code=lambda wildcards: code_hash(
            "scripts/estimate_memory.py",
            SPECS[wildcards.task].memory_probe,
            task=wildcards.task,
        ),
        libraries=library_versions(),
    script:
        "../scripts/estimate_memory.py"

# The rules every task shares, with the task as a wildcard: prepare its data -> (its own rules:
# embedded base models, encoders) -> one training and evaluation job per experiment x seed.
# What differs between tasks comes from the spec (peftbench.tasks.<task>.SPEC) and the task's
# config section: the modules a job runs, its extra inputs, its resources.
# Scheduling (threads and priorities of set-up jobs): rules/common.smk, setup_threads.


rule prepare_data:
    output:
        directory("results/{task}/data"),
    log:
        "logs/{task}/prepare_data.log",
    priority: DATA_PRIORITY
    conda:
        "../envs/train.yaml"
    params:
        data=lambda wildcards: config[wildcards.task]["data"],
        code=lambda wildcards: code_hash(
            "scripts/prepare_data.py",
            SPECS[wildcards.task].data_module,
            task=wildcards.task,
        ),
        libraries=library_versions(),
    script:
        "../scripts/prepare_data.py"


# Every pre-flight check of a task's selected experiments in the training environment, for a
# launcher without torch (peftbench.core.task_checks; a launcher with torch runs them while
# building the DAG and plans no such job): every training job of the task waits for it
# (common.smk, wait_for_preflight), and a problem fails it with the DAG's message.
checkpoint preflight:
    input:
        lambda wildcards: selected_experiment_files(wildcards.task),
    output:
        "results/{task}/preflight.json",
    log:
        "logs/{task}/preflight.log",
    priority: DATA_PRIORITY
    conda:
        "../envs/train.yaml"
    threads: 1
    params:
        task_cfg=lambda wildcards: config[wildcards.task],
        select=lambda wildcards: (config.get("select") or {}).get(wildcards.task),
        config_files=list(CONFIG_FILES),
        code=preflight_code,
        libraries=library_versions(),
    script:
        "../scripts/preflight.py"


rule train:
    input:
        unpack(training_inputs),
        wait_for_preflight,
    output:
        result="results/{task}/runs/{method}/{name}/seed{seed}/result.json",
    log:
        "logs/{task}/runs/{method}/{name}/seed{seed}.log",
    conda:
        "../envs/train.yaml"
    threads: task_resource("threads")
    resources:
        gpu=gpus_per_training_job,
        mem_mb=task_resource("mem_mb"),
        runtime=task_resource("runtime"),
    params:
        training=training_params,
        task_cfg=run_config,
        code=lambda wildcards: code_hash(
            "scripts/train_experiment.py",
            SPECS[wildcards.task].run_module,
            task=wildcards.task,
        ),
        libraries=library_versions(),
    script:
        "../scripts/train_experiment.py"


# With search_seeds: first, the grid point that runs an experiment's other seeds: the best on the
# first seed's validation (peftbench.analysis.search, the same rule as the summary's). A
# checkpoint, because which runs follow depends on it; rerun when any point's result changes.
checkpoint choose_point:
    input:
        grid_point_results,
    output:
        "results/{task}/search/{method}/{name}.json",
    log:
        "logs/{task}/search/{method}/{name}.log",
    wildcard_constraints:
        name=r"[^/@]+",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        code=lambda wildcards: code_hash("scripts/choose_point.py", task=wildcards.task),
    script:
        "../scripts/choose_point.py"

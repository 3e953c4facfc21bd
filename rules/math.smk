# Math reasoning: prepare data -> (embedded: pretrain the base model) -> one training and
# evaluation job per experiment x seed -> summary table and Pareto chart.

MATH = config["math"]
MATH_DATA = [
    f"results/math/data/{name}"
    for name in [
        "train.jsonl",
        "valid.jsonl",
        "test.jsonl",
        "heldout.jsonl",
        "manifest.json",
    ]
]
MATH_BASE = "results/math/base_model"


rule math_prepare_data:
    output:
        MATH_DATA,
    log:
        "logs/math/prepare_data.log",
    conda:
        "../envs/train.yaml"
    params:
        data=MATH["data"],
        code=code_hash("data"),
        libraries=library_versions(),
    script:
        "../scripts/prepare_math_data.py"


rule math_base_model:
    input:
        MATH_DATA,
    output:
        directory(MATH_BASE),
    log:
        "logs/math/base_model.log",
    conda:
        "../envs/train.yaml"
    threads: 2
    params:
        model=MATH["base_model"],
        code=code_hash("base"),
        libraries=library_versions(),
    script:
        "../scripts/build_base_model.py"


rule math_train:
    input:
        data=MATH_DATA,
        base=MATH_BASE if MATH["base_model"]["source"] == "embedded" else [],
        experiment=experiment_inputs("math"),
    output:
        result="results/math/runs/{method}/{name}/seed{seed}/result.json",
    log:
        "logs/math/runs/{method}/{name}/seed{seed}.log",
    conda:
        "../envs/train.yaml"
    threads: MATH["resources"]["threads"]
    resources:
        gpu=gpus_per_training_job("math"),
        mem_mb=MATH["resources"]["mem_mb"],
        runtime=MATH["resources"]["runtime"],
    params:
        training=training_params("math"),
        model=MATH["base_model"],
        experiments_dir=MATH["experiments_dir"],
        code=code_hash("train"),
        libraries=library_versions(),
    script:
        "../scripts/train_experiment.py"


rule math_aggregate:
    input:
        run_results("math"),
    output:
        summary="results/math/summary.csv",
        html="results/math/pareto.html",
        png="results/math/pareto.png",
    log:
        "logs/math/aggregate.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        title="Math reasoning: test accuracy vs. training peak memory",
    script:
        "../scripts/aggregate.py"

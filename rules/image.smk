# Image generation (DreamBooth style): prepare data -> (embedded: pretrain the base model, train
# the similarity encoder) -> one training and evaluation job per experiment x seed -> summary
# table and Pareto chart.

IMAGE = config["image"]
IMAGE_DATA = "results/image/data"
IMAGE_BASE = "results/image/base_model"
IMAGE_ENCODER = "results/image/encoder"


rule image_prepare_data:
    output:
        directory(IMAGE_DATA),
    log:
        "logs/image/prepare_data.log",
    conda:
        "../envs/train.yaml"
    params:
        data=IMAGE["data"],
        code=code_hash("image_data"),
        libraries=library_versions(),
    script:
        "../scripts/prepare_image_data.py"


rule image_base_model:
    output:
        directory(IMAGE_BASE),
    log:
        "logs/image/base_model.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    params:
        model=IMAGE["base_model"],
        code=code_hash("image_base"),
        libraries=library_versions(),
    script:
        "../scripts/build_image_base.py"


rule image_encoder:
    output:
        directory(IMAGE_ENCODER),
    log:
        "logs/image/encoder.log",
    conda:
        "../envs/train.yaml"
    threads: 1
    params:
        encoder=IMAGE["encoder"],
        code=code_hash("image_encoder"),
        libraries=library_versions(),
    script:
        "../scripts/build_image_encoder.py"


rule image_train:
    input:
        data=IMAGE_DATA,
        base=IMAGE_BASE if IMAGE["base_model"]["source"] == "embedded" else [],
        encoder=IMAGE_ENCODER if IMAGE["encoder"]["source"] == "embedded" else [],
        experiment=experiment_inputs("image"),
    output:
        result="results/image/runs/{method}/{name}/seed{seed}/result.json",
    log:
        "logs/image/runs/{method}/{name}/seed{seed}.log",
    conda:
        "../envs/train.yaml"
    threads: IMAGE["resources"]["threads"]
    resources:
        gpu=gpus_per_training_job("image"),
        mem_mb=IMAGE["resources"]["mem_mb"],
        runtime=IMAGE["resources"]["runtime"],
    params:
        training=training_params("image"),
        model=IMAGE["base_model"],
        encoder=IMAGE["encoder"],
        experiments_dir=IMAGE["experiments_dir"],
        code=code_hash("image_train"),
        libraries=library_versions(),
    script:
        "../scripts/train_experiment.py"


rule image_aggregate:
    input:
        run_results("image"),
    output:
        summary="results/image/summary.csv",
        html="results/image/pareto.html",
        png="results/image/pareto.png",
    log:
        "logs/image/aggregate.log",
    localrule: True
    conda:
        "../envs/report.yaml"
    params:
        title="Image generation: similarity to the concept vs. training peak memory",
        quality="similarity",
    script:
        "../scripts/aggregate.py"

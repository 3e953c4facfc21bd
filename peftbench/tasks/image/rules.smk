# The image task's own rules (TaskSpec.rules; the Snakefile includes them when the task runs): the
# embedded default pretrains its base model and trains its similarity encoder; the two build side
# by side; then the base reference every training job takes. Data preparation and training are
# the generic rules of rules/train.smk.
from types import SimpleNamespace  # noqa: E402

from peftbench.tasks.image import (  # noqa: E402
    BASE_REFERENCE,
    EMBEDDED_BASE,
    EMBEDDED_ENCODER,
    GENERATION_KEYS,
)


rule image_base_model:
    output:
        directory(EMBEDDED_BASE),
    log:
        "logs/image/base_model.log",
    priority: SETUP_PRIORITY
    conda:
        "../../../envs/train.yaml"
    # Other bits with other thread counts: fixed.
    threads: setup_threads(fixed=1, needed=config["image"]["base_model"]["source"] == "embedded")
    params:
        model=config["image"]["base_model"],
        code=code_hash("scripts/build_image_base.py"),
        libraries=library_versions(),
    script:
        "../../../scripts/build_image_base.py"


rule image_encoder:
    output:
        directory(EMBEDDED_ENCODER),
    log:
        "logs/image/encoder.log",
    priority: SETUP_PRIORITY
    conda:
        "../../../envs/train.yaml"
    # Other bits with other thread counts: fixed.
    threads: setup_threads(fixed=1, needed=config["image"]["encoder"]["source"] == "embedded")
    params:
        encoder=config["image"]["encoder"],
        code=code_hash("scripts/build_image_encoder.py"),
        libraries=library_versions(),
    script:
        "../../../scripts/build_image_encoder.py"


# What every image run would recompute identically (the base model's drift and sample images, the
# encoder's embeddings of the reference images), once, with the task's default generation
# settings; a run whose settings differ (an experiment's override) computes it inline instead.
# It runs like a training job (same threads, same device): its numbers are then bit-identical.
rule image_base_reference:
    input:
        # The prepared data, the embedded base model and encoder, as a training job gets them.
        unpack(
            lambda wildcards: {
                "data": "results/image/data",
                **{
                    key: path
                    for key, path in SPECS["image"]
                    .extra_inputs(config["image"])
                    .items()
                    if key != "reference"
                },
            }
        ),
    output:
        directory(BASE_REFERENCE),
    log:
        "logs/image/base_reference.log",
    priority: SETUP_PRIORITY
    conda:
        "../../../envs/train.yaml"
    threads: config["image"]["resources"]["threads"]
    resources:
        gpu=lambda wildcards: gpus_per_training_job(SimpleNamespace(task="image")),
        mem_mb=config["image"]["resources"]["mem_mb"],
        runtime=config["image"]["resources"]["runtime"],
    params:
        training={key: config["image"]["training"][key] for key in GENERATION_KEYS},
        task_cfg={key: config["image"][key] for key in ("base_model", "encoder")},
        code=code_hash("peftbench/tasks/image/build_reference.py"),
        libraries=library_versions(),
    script:
        "build_reference.py"

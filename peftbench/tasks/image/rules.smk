# The image task's own rules (TaskSpec.rules; the Snakefile includes them when the task runs): the
# embedded default pretrains its base model and trains its similarity encoder; the two build side
# by side. Data preparation and training are the generic rules of rules/train.smk.
from peftbench.tasks.image import EMBEDDED_BASE, EMBEDDED_ENCODER  # noqa: E402


rule image_base_model:
    output:
        directory(EMBEDDED_BASE),
    log:
        "logs/image/base_model.log",
    conda:
        "../../../envs/train.yaml"
    threads: 1
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
    conda:
        "../../../envs/train.yaml"
    threads: 1
    params:
        encoder=config["image"]["encoder"],
        code=code_hash("scripts/build_image_encoder.py"),
        libraries=library_versions(),
    script:
        "../../../scripts/build_image_encoder.py"

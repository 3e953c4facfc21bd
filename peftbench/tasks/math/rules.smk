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
    # The longest set-up job of the embedded default: first, so math training is not the last
    # to start.
    priority: SETUP_PRIORITY + 1
    conda:
        "../../../envs/train.yaml"
    # Same bits on any thread count (tests/workflow/test_scheduling.py): sized from the cores.
    threads: setup_threads()
    params:
        model=config["math"]["base_model"],
        code=code_hash("scripts/build_base_model.py"),
        libraries=library_versions(),
    script:
        "../../../scripts/build_base_model.py"


# The work every math run would redo identically (tokenizing the training and held-out data, the
# base model's held-out loss), done once for the task's training defaults. Its params hold only
# what changes that work, so editing another default reruns neither it nor the runs it feeds; a
# run whose own settings differ computes its part inline (peftbench.tasks.math.reference).
from types import SimpleNamespace  # noqa: E402

from peftbench.tasks.math import REFERENCE_DIR, base_inputs  # noqa: E402
from peftbench.tasks.math.reference import settings as reference_settings  # noqa: E402


rule math_base_reference:
    input:
        **base_inputs(config["math"]),
        data="results/math/data",
    output:
        directory(REFERENCE_DIR),
    log:
        "logs/math/base_reference.log",
    priority: SETUP_PRIORITY
    conda:
        "../../../envs/train.yaml"
    # As a training job: the held-out loss is only shared with runs on the same thread count.
    threads: config["math"]["resources"]["threads"]
    resources:
        gpu=lambda wildcards: gpus_per_training_job(SimpleNamespace(task="math")),
        mem_mb=config["math"]["resources"]["mem_mb"],
    params:
        training=reference_settings(config["math"]["training"]),
        task_cfg={"base_model": config["math"]["base_model"]},
        code=code_hash("peftbench/tasks/math/reference_job.py"),
        libraries=library_versions(),
    script:
        "reference_job.py"

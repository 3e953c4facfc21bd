# Config validation and experiment discovery. Runs while the DAG is built, so a bad config or
# experiment file fails here, naming the file and the key, before any job starts.
import sys
from functools import cache
from pathlib import Path

from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)

from peftbench.core import codehash  # noqa: E402
from peftbench.core.config import ConfigError  # noqa: E402
from peftbench.core import experiments as exps  # noqa: E402

validate(config, "../config/schemas/config.schema.yaml")

# What each rule family runs: its entry script and, for training, the task's run module. The hash
# of their import closure (peftbench.core.codehash) is a rule parameter, so changing any module a
# job imports (or the installed libraries below) makes Snakemake rerun exactly those jobs.
CODE = {
    "data": ["scripts/prepare_math_data.py"],
    "base": ["scripts/build_base_model.py"],
    "train": ["scripts/train_experiment.py", "peftbench.tasks.math.run"],
    "image_data": ["scripts/prepare_image_data.py"],
    "image_base": ["scripts/build_image_base.py"],
    "image_encoder": ["scripts/build_image_encoder.py"],
    "image_train": ["scripts/train_experiment.py", "peftbench.tasks.image.run"],
}
LIBRARIES = ["torch", "transformers", "peft", "tokenizers", "datasets", "diffusers"]


wildcard_constraints:
    method="[^/]+",
    name="[^/]+",
    seed="[0-9]+",


def code_hash(family):
    return codehash.code_hash(
        [
            entry if entry.startswith("peftbench.") else Path(workflow.basedir) / entry
            for entry in CODE[family]
        ]
    )


def gpus_per_training_job(task):
    """The GPU token a training job takes: config ``<task>.resources.gpu``, or by default 1 (one
    job per GPU: `--resources gpu=N` caps them), except that a run on a machine without CUDA
    gives none: its jobs run on the CPU, where a token would only serialise them and leave cores
    idle. The executor is not known while this file is read, so cluster profiles say what jobs
    need (profiles/slurm sets math_train:gpu=1 for the GPU nodes behind a CPU-only login node).
    """
    configured = config[task]["resources"].get("gpu")
    if configured is not None:
        return configured
    if workflow.is_main_process:
        import torch

        return 1 if torch.cuda.is_available() else 0
    return 1


def library_versions():
    from importlib.metadata import version

    return {name: version(name) for name in LIBRARIES}


@cache
def task_experiments(task):
    """Selected experiments of ``task`` (method/name), validated before any job starts."""
    cfg = config[task]
    found = exps.select(
        exps.discover(cfg["experiments_dir"]), config.get("select", {}).get(task)
    )
    problems = []
    for experiment in found:
        problems += exps.check_adapter_config(cfg["experiments_dir"], experiment)
        try:
            exps.effective_params(cfg["training"], cfg["experiments_dir"], experiment)
        except ConfigError as exc:
            problems.append(str(exc))
    # The model-level check needs the files to be sound; it runs once, in the main process
    # (cluster jobs re-read this file and need not repeat it).
    if not problems and workflow.is_main_process:
        from peftbench.core.validate import validate_task

        problems = validate_task(cfg, found, task)
    if problems:
        raise ConfigError(
            f"{len(problems)} problem(s) found before training:\n" + "\n".join(problems)
        )
    return found


def task_seeds(task):
    """Seeds of ``task``: its own ``seeds`` list, else the global one."""
    return config[task].get("seeds") or config["seeds"]


def run_results(task):
    """result.json paths of every selected experiment x seed, plus the base-model reference."""
    runs = task_experiments(task) + [exps.BASE_EXPERIMENT]
    return [
        f"results/{task}/runs/{experiment}/seed{seed}/result.json"
        for experiment in runs
        for seed in task_seeds(task)
    ]


def experiment_inputs(task):
    def inputs(wildcards):
        experiment = f"{wildcards.method}/{wildcards.name}"
        if experiment == exps.BASE_EXPERIMENT:
            return []
        return exps.experiment_files(config[task]["experiments_dir"], experiment)

    return inputs


def training_params(task):
    """Effective training config of one experiment: a Snakemake param, so editing a task default
    or an override reruns exactly the experiments it changes."""

    def params(wildcards):
        experiment = f"{wildcards.method}/{wildcards.name}"
        if experiment == exps.BASE_EXPERIMENT:
            return config[task]["training"]
        return exps.effective_params(
            config[task]["training"], config[task]["experiments_dir"], experiment
        )

    return params


def all_targets():
    tasks = config["tasks"]
    samples = ["results/image/report/samples.html"] if "image" in tasks else []
    # The report's inputs (rules/report.smk) are built by default, so that
    # `snakemake --report results/report.html` works right after a run.
    report_pages = ["charts.html", "frontier.html", "configs.html"]
    return (
        [f"results/{task}/summary.csv" for task in tasks]
        + [f"results/{task}/pareto.png" for task in tasks]
        + [
            "results/summary.parquet",
            "results/summary.html",
            "results/environment.html",
        ]
        + [f"results/{task}/report/{page}" for task in tasks for page in report_pages]
        + samples
    )


def report_failures():
    """Final summary line: how many experiments failed (their jobs exit 0 so the DAG goes on)."""
    import pandas as pd

    for task in config["tasks"]:
        path = Path(f"results/{task}/summary.csv")
        if not path.exists():
            continue
        table = pd.read_csv(path)
        failed = table[table["status"] == "failed"]
        print(
            f"peftbench {task}: {len(table) - len(failed)} succeeded, {len(failed)} failed"
        )
        for row in failed.itertuples():
            print(f"  FAILED {row.experiment} seed {row.seed}: {row.error}")

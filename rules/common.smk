# Config validation, the task registry and experiment discovery. Runs while the DAG is built, so a
# bad config or experiment file fails here, naming the file and the key, before any job starts.
# Nothing here names a task: every task-specific fact comes from its spec (peftbench.tasks).
import re
import sys
from functools import cache
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

sys.path.insert(0, workflow.basedir)

from peftbench.core import codehash  # noqa: E402
from peftbench.core import experiments as exps  # noqa: E402
from peftbench.core.config import ConfigError, training_table  # noqa: E402
from peftbench.tasks import registry  # noqa: E402

# The shared keys; each task's section is checked by its own schema (check_tasks below).
validate(config, "../config/schemas/config.schema.yaml")
# Tasks that live outside the package (task_packages: {name: folder}) join the registry first.
try:
    registry.register_packages(config.get("task_packages"), workflow.basedir)
except registry.UnknownTaskError as exc:
    raise ConfigError(str(exc)) from None

LIBRARIES = ["torch", "transformers", "peft", "tokenizers", "datasets", "diffusers"]


def task_module(task, dotted):
    """The package of ``task`` (``dotted`` "."), or one of its modules, imported."""
    return registry.import_module(dotted, task)


def task_folder(task):
    """The folder of ``task``'s package: its spec names its schema, rules and modules in it."""
    return Path(task_module(task, ".").__file__).parent


def check_tasks():
    """The spec of every task in ``config["tasks"]``, its config section checked by its schema."""
    specs = {}
    for task in config["tasks"]:
        try:
            spec = registry.get(task)
        except registry.UnknownTaskError as exc:
            raise ConfigError(f"tasks: {exc}") from None
        if not isinstance(config.get(task), dict):
            raise ConfigError(f"tasks: task '{task}' has no config section '{task}'")
        schema = task_folder(task) / spec.config_schema
        try:
            validate(config[task], str(schema))
        except WorkflowError as exc:
            raise ConfigError(f"config section '{task}' ({schema}):\n{exc}") from None
        specs[task] = spec
    return specs


SPECS = check_tasks()


wildcard_constraints:
    task="|".join(re.escape(task) for task in SPECS),
    method="[^/]+",
    name="[^/]+",
    seed="[0-9]+",


def module_entry(task, dotted):
    """A spec's module as peftbench.core.codehash takes it: a package module name, or the file
    of a module named relative to the task's package (".run")."""
    if not dotted.startswith("."):
        return dotted
    relative = Path(*dotted[1:].split("."))
    for candidate in (relative.with_suffix(".py"), relative / "__init__.py"):
        if (task_folder(task) / candidate).is_file():
            return task_folder(task) / candidate
    raise ConfigError(
        f"task '{task}': module {dotted} not found in {task_folder(task)}"
    )


# Task packages outside peftbench, by the name they are imported under: their modules' relative
# imports are followed by the code hash too.
EXTERNAL_PACKAGES = {
    task_module(task, ".").__name__: task_folder(task)
    for task in config.get("task_packages") or {}
}


@cache
def code_hash(*entries, task=None):
    """Hash of the import closure (peftbench.core.codehash) of ``entries``: scripts relative to
    the workflow folder, or modules (a spec's relative names resolve in ``task``'s package).
    It is a rule parameter, so changing any module a job imports (or the installed libraries
    below) makes Snakemake rerun exactly those jobs."""
    resolved = [
        (
            Path(workflow.basedir) / entry
            if entry.endswith(".py")
            else module_entry(task, entry)
        )
        for entry in entries
    ]
    return codehash.code_hash(resolved, packages=EXTERNAL_PACKAGES)


def library_versions():
    from importlib.metadata import version

    return {name: version(name) for name in LIBRARIES}


def task_resource(key):
    """A training job's ``key`` from its task's ``resources`` config, per job (task wildcard)."""
    return lambda wildcards: config[wildcards.task]["resources"][key]


def gpus_per_training_job(wildcards):
    """The GPU token a training job takes: config ``<task>.resources.gpu``, or by default 1 (one
    job per GPU: `--resources gpu=N` caps them), except that a run on a machine without CUDA
    gives none: its jobs run on the CPU, where a token would only serialise them and leave cores
    idle. The executor is not known while this file is read, so cluster profiles say what jobs
    need (profiles/slurm sets train:gpu=1 for the GPU nodes behind a CPU-only login node).
    """
    configured = config[wildcards.task]["resources"].get("gpu")
    if configured is not None:
        return configured
    return 1 if not workflow.is_main_process or cuda_available() else 0


@cache
def cuda_available():
    import torch

    return torch.cuda.is_available()


@cache
def task_table(task):
    """The training keys of ``task``: the shared ones and its spec's own."""
    return training_table(SPECS[task].training_keys)


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
            exps.effective_params(
                cfg["training"], cfg["experiments_dir"], experiment, task_table(task)
            )
        except ConfigError as exc:
            problems.append(str(exc))
    # The model-level check needs the files to be sound; it runs once, in the main process
    # (cluster jobs re-read this file and need not repeat it).
    if not problems and workflow.is_main_process and SPECS[task].meta_model:
        from peftbench.core.validate import validate_task

        build = task_module(task, SPECS[task].meta_model).build_meta_model
        problems = validate_task(cfg, found, build, task_table(task))
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


def training_inputs(wildcards):
    """Named inputs of one training job: the prepared data, the task's extras (an embedded base
    model, ...) and the experiment's files (editing one reruns exactly that experiment).
    """
    task, experiment = wildcards.task, f"{wildcards.method}/{wildcards.name}"
    files = (
        []
        if experiment == exps.BASE_EXPERIMENT
        else exps.experiment_files(config[task]["experiments_dir"], experiment)
    )
    return {
        "data": f"results/{task}/data",
        **SPECS[task].extra_inputs(config[task]),
        "experiment": files,
    }


def training_params(wildcards):
    """Effective training config of one experiment: a Snakemake param, so editing a task default
    or an override reruns exactly the experiments it changes."""
    task, experiment = wildcards.task, f"{wildcards.method}/{wildcards.name}"
    cfg = config[task]
    if experiment == exps.BASE_EXPERIMENT:
        return cfg["training"]
    return exps.effective_params(
        cfg["training"], cfg["experiments_dir"], experiment, task_table(task)
    )


# Keys of a task's section that do not change what a run computes: where it is scheduled, which
# seeds exist, and the training defaults (the effective config is a param of its own, so editing
# a default that an experiment overrides does not rerun that experiment).
NOT_RUN_INPUTS = ("resources", "seeds", "training")


def run_config(wildcards):
    """The task's config section as a training job sees it (RunContext.task_cfg)."""
    return {
        key: value
        for key, value in config[wildcards.task].items()
        if key not in NOT_RUN_INPUTS
    }


def all_targets():
    # The report's inputs (rules/report.smk) are built by default, so that
    # `snakemake --report results/report.html` works right after a run.
    report_pages = ["charts.html", "frontier.html", "configs.html"]
    samples = [
        f"results/{task}/report/samples.html"
        for task, spec in SPECS.items()
        if spec.samples_file
    ]
    return (
        [f"results/{task}/summary.csv" for task in SPECS]
        + [f"results/{task}/pareto.png" for task in SPECS]
        + [
            "results/summary.parquet",
            "results/summary.html",
            "results/environment.html",
        ]
        + [f"results/{task}/report/{page}" for task in SPECS for page in report_pages]
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

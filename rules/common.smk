# Config validation, the task registry and experiment discovery. Runs while the DAG is built, so a
# bad config or experiment file fails here, naming the file and the key, before any job starts.
# Nothing here names a task: every task-specific fact comes from its spec (peftbench.tasks).
import json
import os
import re
import sys
from functools import cache
from pathlib import Path

import yaml

sys.path.insert(0, workflow.basedir)

from snakemake.exceptions import WorkflowError

from peftbench.core import codehash  # noqa: E402
from peftbench.core import configfile  # noqa: E402
from peftbench.core import experiments as exps  # noqa: E402
from peftbench.core import search  # noqa: E402
from peftbench.core import task_checks  # noqa: E402
from peftbench.core.config import (
    ConfigError,
    did_you_mean,
    training_table,
)  # noqa: E402
from peftbench.core.layout import ARCHITECTURES, ESTIMATE_FILE  # noqa: E402
from peftbench.core.workflow import gpu_device_present  # noqa: E402
from peftbench.tasks import registry  # noqa: E402

LIBRARIES = ["torch", "transformers", "peft", "tokenizers", "datasets", "diffusers"]
# Whether this launcher has the training stack (README, "A launcher without torch"): with it
# the DAG build runs every pre-flight check, without it the task's preflight job runs those that
# need it. Found, not imported.
TORCH_IMPORTABLE = task_checks.torch_importable()
SHARED_SCHEMA = Path(workflow.basedir) / "config/schemas/config.schema.yaml"


def task_module(task, dotted):
    """The package of ``task`` (``dotted`` "."), or one of its modules, imported."""
    return registry.import_module(dotted, task)


def task_folder(task):
    """The folder of ``task``'s package: its spec names its schema, rules and modules in it."""
    return task_checks.task_folder(task)


def blamed(*path):
    """The config files that set ``path`` (or its nearest parent), for error messages."""
    return ", ".join(configfile.sources_of(path, CONFIG_FILES))


def unknown(kind, name, known):
    return f"unknown {kind} '{name}'{did_you_mean(name, known)} (known: {', '.join(known)})"


def check_config():
    """The spec of every task in ``config["tasks"]``, and the problems of the whole config:
    unknown keys at any level, the shared keys against the shared schema, each task's section
    against its own schema (its spec's config_schema), tasks named under select/published.
    """
    errors = []  # (key path, message)
    try:
        # Tasks that live outside the package (task_packages: {name: folder}) join first.
        registry.register_packages(config.get("task_packages"), workflow.basedir)
    except registry.UnknownTaskError as exc:
        errors.append((("task_packages",), str(exc)))
    tasks = [spec.name for spec in registry.known()]
    shared = list(yaml.safe_load(SHARED_SCHEMA.read_text())["properties"])
    for key in config:
        if key not in shared and key not in tasks:
            errors.append(
                (
                    (key,),
                    unknown("top-level key (shared key or task)", key, shared + tasks),
                )
            )
    checked = {k: v for k, v in config.items() if k in shared or k in tasks}
    errors += configfile.schema_problems(checked, SHARED_SCHEMA)
    for key in ("select", "published"):
        section = config.get(key)
        for task in section if isinstance(section, dict) else ():
            if task not in tasks:
                errors.append(((key, task), unknown("task", task, tasks)))
    specs = {}
    run = config.get("tasks")
    for task in run if isinstance(run, list) else ():
        if task not in tasks:
            errors.append(
                (("tasks",), unknown("task", task, tasks) + "; see task_packages")
            )
        elif not isinstance(config.get(task), dict):
            errors.append(
                ((task,), f"task '{task}' is listed under tasks but has no section")
            )
        else:
            specs[task] = registry.get(task)
            schema = task_folder(task) / specs[task].config_schema
            errors += configfile.schema_problems(config[task], schema, (task,))
    # The shared schema checks a task section's generic keys, its own schema all of them.
    return specs, list(dict.fromkeys(configfile.blame(errors, CONFIG_FILES)))


try:
    # Every config file Snakemake merged, re-read with duplicate keys refused (Snakemake
    # silently keeps the last value of a repeated key).
    CONFIG_FILES = {
        os.path.relpath(f): configfile.load_config_file(f)
        for f in configfile.by_precedence(
            workflow.configfiles, workflow.overwrite_configfiles
        )
    }
    SPECS, _problems = check_config()
except ConfigError as exc:
    raise ConfigError(str(exc)) from None  # the message says it all: no traceback
if _problems:
    raise ConfigError(
        f"{len(_problems)} problem(s) in the config (files: {', '.join(CONFIG_FILES)}):\n"
        + "\n".join(_problems)
    )


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
    """Installed versions of LIBRARIES (None: not installed), a param of every rule that runs
    them, so that upgrading one reruns its jobs. That holds where the jobs run in this
    environment. With --sdm conda they run in their rule's environment, which Snakemake's
    software-env trigger follows, and this launcher's versions say nothing about it (a launcher
    without torch would rerun every job): none are given. What a result records are the
    versions of its own job's process (peftbench.core.provenance)."""
    from snakemake.settings.types import DeploymentMethod

    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method:
        return {}
    return dict(_library_versions())


@cache
def _library_versions():
    # Read once: each rule asks, and every look-up scans the installed distributions.
    from importlib.metadata import PackageNotFoundError, version

    def installed(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {name: installed(name) for name in LIBRARIES}


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


# Scheduling (issue 15). A task's training jobs wait for its set-up jobs (data, embedded base
# models, encoders, shared references), so these run first: among the jobs that are ready,
# Snakemake starts those of the highest `priority:` (it does not pass a priority on to the jobs
# a prioritised job waits for, so each set-up rule carries its own). Training jobs keep 0.
SETUP_PRIORITY = 10
# Data preparation takes seconds and every set-up job of its task waits for it.
DATA_PRIORITY = SETUP_PRIORITY + 10
# At most this many threads for one set-up job: a model of the embedded size is small, and the
# other cores can serve other jobs (a guess: speed-ups beyond 2 threads are not measured).
MAX_SETUP_THREADS = 8
# The threads of every set-up rule of this run whose thread count is fixed (see setup_threads).
FIXED_SETUP_THREADS = []


def available_cores():
    """The cores Snakemake was given (--cores; 1 in a dry run without it), or 1 where it was
    given none (a cluster run without --cores: jobs get the threads they ask for there).
    """
    try:
        return workflow.cores
    except WorkflowError:
        return 1


def setup_threads(fixed=None, needed=True):
    """The `threads:` of a set-up rule (an embedded base model, an encoder).

    ``fixed``: a thread count the rule's results depend on (the embedded image base model and
    encoder give other bits with 1 and 2 threads), kept on every machine. Without it the results
    must be the same on any thread count (the math base model's: tests/workflow/
    test_scheduling.py), and the rule takes the cores that the run's fixed set-up jobs leave,
    at least 1: no training job can start before the set-up jobs are done, so each should have
    cores of its own. On 2 cores with both embedded tasks every builder gets one (a second
    thread would make the math base model wait for both cores, as it did: issue 15); alone (a
    one-task run) it gets them all. A pure function of the cores and the config, not of which
    outputs exist, so a run's threads are known from its command. ``needed``: False where the
    task's config does not build it (a hub model), so that it takes no cores from the others.
    """
    if fixed is not None:
        if needed:
            FIXED_SETUP_THREADS.append(fixed)
        return fixed

    def threads(wildcards):
        # Called while the DAG is built, once every task's rules have been read.
        return max(
            1, min(MAX_SETUP_THREADS, available_cores() - sum(FIXED_SETUP_THREADS))
        )

    return threads


@cache
def cuda_available():
    """Whether torch sees a GPU. On a Linux machine without any GPU device file (NVIDIA, ROCm,
    WSL) the answer is no without importing torch (a second or more of every DAG build).
    """
    if not gpu_device_present():
        return False
    if not TORCH_IMPORTABLE:
        # A GPU launcher without torch: its jobs' environment has a GPU torch.
        return True
    import torch

    return torch.cuda.is_available()


@cache
def task_table(task):
    """The training keys of ``task``: the shared ones and its spec's own."""
    return training_table(SPECS[task].training_keys)


@cache
def task_experiments(task):
    """Selected experiments of ``task`` (method/name), validated before any job starts."""
    try:
        return checked_experiments(task)
    except ConfigError as exc:
        raise ConfigError(
            str(exc)
        ) from None  # the message names file and field: no traceback


def checked_experiments(task):
    """The selected experiments of ``task``; ConfigError listing every problem otherwise
    (peftbench.core.task_checks). A launcher with torch runs every check here, the model-level
    one in the main process only (cluster jobs re-read this file and need not repeat it); one
    without torch runs the light ones, and the task's preflight job the others (rule preflight).
    """
    return task_checks.check_task(
        task,
        config,
        CONFIG_FILES,
        libraries=TORCH_IMPORTABLE,
        model=workflow.is_main_process,
        # A cluster run without --cores checks in one process (a shared login node).
        workers=task_checks.check_workers(available_cores()),
    )


def task_seeds(task):
    """Seeds of ``task``: its own ``seeds`` list, else the global one."""
    return config[task].get("seeds") or config["seeds"]


def training_settings(task):
    """How ``task``'s experiments merge their overrides, and its default search grid."""
    return task_checks.training_settings(config[task])


@cache
def task_runs(task):
    """Run ids of ``task``: one per grid point of each selected experiment (method/name@point),
    or method/name without a grid, plus the base-model reference."""
    cfg = config[task]
    runs = [
        run
        for experiment in task_experiments(task)
        for run in exps.run_ids(
            cfg["experiments_dir"],
            experiment,
            cfg.get("search"),
            task_table(task),
            training_settings(task)["points"],
        )
    ]
    return runs + [exps.BASE_EXPERIMENT]


def search_seeds(task):
    """Which seeds a search grid's points run (task config ``search_seeds``): all of them, or
    only the first, the chosen point then running the others (rule choose_point)."""
    return config[task].get("search_seeds", "all")


def run_results(task):
    """result.json paths of every run (grid point) x seed, plus the base-model reference.

    With ``search_seeds: first`` (and more than one seed) every grid point runs the first seed
    and only the point chosen on its validation runs the other seeds: those paths need the
    choice (checkpoint choose_point), so call this from input functions only (it raises
    Snakemake's IncompleteCheckpointException until the choice exists)."""
    return planned_results(task) + chosen_results(task)


def _first_seed_only(task):
    return search_seeds(task) == "first" and len(task_seeds(task)) > 1


def planned_results(task):
    """The result.json paths known before any choice: all of them, except with
    ``search_seeds: first`` the chosen points' other seeds (:func:`chosen_results`)."""
    seeds = task_seeds(task)
    first = _first_seed_only(task)
    return [
        f"results/{task}/runs/{run}/seed{seed}/result.json"
        for run in task_runs(task)
        for seed in (
            seeds[:1] if first and search.base_experiment(run) != run else seeds
        )
    ]


def searched_experiments(task):
    """The experiments of ``task`` with a grid (method/name), in plan order."""
    runs = task_runs(task)
    return list(
        dict.fromkeys(
            search.base_experiment(run)
            for run in runs
            if search.base_experiment(run) != run
        )
    )


def chosen_results(task, experiment=None):
    """With ``search_seeds: first``: the result.json of the chosen grid point of each searched
    experiment (or of ``experiment`` only) on every seed but the first (read from checkpoint
    choose_point); else none."""
    if not _first_seed_only(task):
        return []
    return [
        f"results/{task}/runs/{chosen_run(task, searched)}/seed{seed}/result.json"
        for searched in ([experiment] if experiment else searched_experiments(task))
        for seed in task_seeds(task)[1:]
    ]


def chosen_inputs():
    """One input function per searched experiment of every task (:func:`chosen_results`): each
    waits on its own checkpoint, so Snakemake plans every choice at once (one function for all
    would reveal them one checkpoint at a time)."""
    return [
        lambda wildcards, task=task, experiment=experiment: chosen_results(
            task, experiment
        )
        for task in SPECS
        if _first_seed_only(task)
        for experiment in searched_experiments(task)
    ]


def grid_point_results(wildcards):
    """The first seed's result.json of every grid point of one experiment: what its choice
    (checkpoint choose_point) is made on."""
    experiment = f"{wildcards.method}/{wildcards.name}"
    seed = task_seeds(wildcards.task)[0]
    return [
        f"results/{wildcards.task}/runs/{run}/seed{seed}/result.json"
        for run in task_runs(wildcards.task)
        if run != experiment and search.base_experiment(run) == experiment
    ]


def chosen_run(task, experiment):
    """Run id (method/name@point) of the grid point chosen for ``experiment`` on the first
    seed's validation (the output of checkpoint choose_point)."""
    method, name = experiment.split("/", 1)
    choice = checkpoints.choose_point.get(task=task, method=method, name=name).output[0]
    with open(choice) as handle:
        return json.load(handle)["run"]


def training_inputs(wildcards):
    """Named inputs of one training job: the prepared data, the task's extras (an embedded base
    model, ...) and the experiment's files (editing one reruns exactly that experiment).
    """
    task, experiment = wildcards.task, f"{wildcards.method}/{wildcards.name}"
    files = (
        []
        if experiment == exps.BASE_EXPERIMENT
        else exps.experiment_files(
            config[task]["experiments_dir"], search.base_experiment(experiment)
        )
    )
    return {
        "data": f"results/{task}/data",
        **SPECS[task].extra_inputs(config[task]),
        "experiment": files,
    }


def wait_for_preflight(wildcards):
    """Without torch in the launcher: no training job of a task starts before its preflight
    job (checkpoint preflight) has passed on the current experiments. An input function of
    rule train that gives no file.

    A checkpoint, not an input: while it has to run (no verdict yet, or an experiment, the
    task's config or its code changed), this raises and Snakemake holds the task's training jobs
    behind it, then plans them again on their own triggers, so editing one experiment retrains
    only it. As an input the marker would rerun them all (an ancient input would not: but a job
    that must rerun keeps Snakemake 9.27 from looking at the triggers of any job downstream, so
    the edited experiment would not retrain either). The inputs of training are the same with
    and without torch, and a dry run lists every training job of a task whose check is due.
    Cluster jobs re-read this file and need not wait.
    """
    if not TORCH_IMPORTABLE and workflow.is_main_process:
        checkpoints.preflight.get(task=wildcards.task)
    return []


def selected_experiment_files(task):
    """The files of every selected experiment of ``task`` (inputs of the jobs that read them
    all: editing one, or selecting others, runs them again)."""
    root = config[task]["experiments_dir"]
    return [
        path
        for experiment in task_experiments(task)
        for path in exps.experiment_files(root, experiment)
    ]


def preflight_code(wildcards):
    """Code hash of the preflight job: its script and the task's meta model, if any."""
    task = wildcards.task
    modules = [m for m in [SPECS[task].meta_model] if m]
    return code_hash("scripts/preflight.py", *modules, task=task)


def training_params(wildcards):
    """Effective training config of one experiment: a Snakemake param, so editing a task default
    or an override reruns exactly the experiments it changes."""
    task, experiment = wildcards.task, f"{wildcards.method}/{wildcards.name}"
    cfg = config[task]
    if experiment == exps.BASE_EXPERIMENT:
        return cfg["training"]
    return exps.effective_params(
        cfg["training"],
        cfg["experiments_dir"],
        experiment,
        task_table(task),
        **training_settings(task),
        # Every run of the plan passed these checks in checked_experiments (file_problems).
        validate=False,
    )


# Keys of a task's section that do not change what a run computes: where it is scheduled, which
# seeds exist, and the training defaults, how overrides merge into them and the search grids (the
# effective config, grid point included, is a param of its own, so editing a default that an
# experiment overrides does not rerun that experiment).
NOT_RUN_INPUTS = (
    "resources",
    "seeds",
    "training",
    "training_merge",
    "search",
    "search_points",
    "search_seeds",
)


def run_config(wildcards):
    """The task's config section as a training job sees it (RunContext.task_cfg)."""
    return {
        key: value
        for key, value in config[wildcards.task].items()
        if key not in NOT_RUN_INPUTS
    }


def estimated_tasks():
    """Tasks whose training memory the workflow predicts before any run (the estimate_memory
    step): every task whose spec has a memory probe. Hub presets, and the embedded default too:
    its architectures are tiny, so it takes seconds there, and the report can set the prediction
    beside the tensor memory the runs accounted."""
    return [task for task, spec in SPECS.items() if spec.memory_probe]


def memory_estimates():
    """The estimate step's output of every task it runs for (inputs of the summary)."""
    return [f"results/{task}/{ESTIMATE_FILE}" for task in estimated_tasks()]


def shipped_architecture_files(task):
    """The architecture config files shipped for a hub base model, which the estimate reads
    instead of downloading (config/presets/architectures/<model id>/); none for the embedded
    default, whose architecture is in the config (a param)."""
    model = config[task]["base_model"]
    if model.get("source") == "embedded":
        return []
    model_id = (model.get("hub") or {}).get("model_id")
    folder = ARCHITECTURES / str(model_id)
    if not model_id or not folder.is_dir():
        # The job records the missing architecture as every experiment's error.
        return []
    return sorted(str(path) for path in folder.rglob("*") if path.is_file())


def estimate_inputs(wildcards):
    """Named inputs of a task's memory estimate: the files of every selected experiment (editing
    one, or selecting others, predicts again) and the shipped architecture it reads."""
    return {
        "experiments": selected_experiment_files(wildcards.task),
        "architecture": shipped_architecture_files(wildcards.task),
    }


def estimate_task_config(wildcards):
    """The task's config section as the estimate reads it: all of it (the training defaults,
    the base model) but where jobs run and which seeds exist."""
    return {
        key: value
        for key, value in config[wildcards.task].items()
        if key not in ("resources", "seeds")
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


#: The local worker of this run (onstart), stopped when the run ends.
LOCAL_WORKER = []


def start_local_worker():
    """onstart: on a local run, one process imports the training stack and forks every job
    (config local_worker; peftbench/core/worker.py). Cluster jobs run in their own allocation,
    and a per-rule conda environment has another interpreter, so neither gets one."""
    from snakemake.settings.types import DeploymentMethod

    from peftbench.core import worker

    if (
        not config.get("local_worker", True)
        or not workflow.local_exec
        or workflow.touch
        or DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
        # A launcher without torch could not preload it; its jobs run in their own processes.
        or not TORCH_IMPORTABLE
    ):
        return
    # Task packages outside peftbench are imported by each job (the worker cannot know them).
    runs = [SPECS[t].run_module for t in SPECS if t in registry.BUILTIN]
    preload = [*worker.STACK, *runs]
    # One server per thread count of the tasks' training jobs; other jobs run themselves.
    threads = [config[task]["resources"]["threads"] for task in SPECS]
    LOCAL_WORKER.extend(worker.start(preload, threads, Path(".snakemake/peftbench")))


def stop_local_worker():
    """onsuccess / onerror: stop the worker of this run."""
    from peftbench.core import worker

    worker.stop(LOCAL_WORKER)
    LOCAL_WORKER.clear()

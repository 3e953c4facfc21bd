"""Where the time of a benchmark run goes (issue 15): print the figures of a finished run.

    python benchmarks/overhead.py [--workdir DIR [--run-args ARGS]] [--skip dry-runs,noop,trainer]

Without ``--workdir`` the default runs first, in a fresh copy (about half an hour on 2 cores);
with it, the run already finished there is measured (its .snakemake/log has the job times).
Prints: wall time per task; the idle share of the cores over the run's timeline and its longest
gaps; the share of training-job time in start-up, training, evaluation and the rest; the time of
``snakemake -n`` (math only) with 18, 100 and 500 experiments, before and after the pre-flight
cache holds them; the time of a no-op rerun; and the own loop's tokens/s against transformers'
``Trainer`` on the embedded math model (a regression check: PASS at a ratio of 0.95 or more).
Figures only: timings vary from run to run, so nothing here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from timeline import busiest_gaps, idle_share, latest_log, parse_log, task_walls
from workflow_run import copy_workflow, run_workflow

STARTUP = """
import sys
sys.path.insert(0, ".")
from peftbench.core.runs import RunContext
from peftbench.core.workflow import redirect_log
from peftbench.tasks import registry
registry.import_module(registry.get(sys.argv[1]).run_module, sys.argv[1])
"""
EXPERIMENT_COUNTS = (18, 100, 500)
# The adapter the generated experiments vary (one distinct file each: none is a cache hit).
TEMPLATE = "lora/rank8-qv"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def startup_seconds(workdir: Path, task: str, repeats: int = 3) -> float:
    """A training job's start-up: a fresh interpreter importing what the training script does
    before its first line of work (median of ``repeats``)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", STARTUP, task], cwd=workdir, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker_startup_seconds(workdir: Path, task: str, repeats: int = 3) -> float:
    """Start-up of a job handed to the local worker (peftbench/core/worker.py): a fresh
    interpreter that hands the same imports to a server that has them already, and the fork
    (median of ``repeats``; the server's own imports are paid once per run, not per job)."""
    from peftbench.core import worker
    from peftbench.tasks import registry

    preload = [*worker.STACK, registry.get(task).run_module]
    with tempfile.TemporaryDirectory(prefix="peftbench-overhead-") as tmp:
        servers = worker.start(preload, [1], Path(tmp))
        socket = Path(os.environ[worker.SOCKET_ENV]) / "threads-1"
        try:
            deadline = time.monotonic() + 120
            while not socket.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            script = Path(tmp) / "job.py"
            # The installed peftbench on both sides (the server refuses another package).
            script.write_text(
                "from peftbench.core.worker import delegate\ndelegate(__file__)\n"
                + STARTUP.replace('sys.path.insert(0, ".")', "")
                + "\nimport os\nassert os.environ.get('PEFTBENCH_IN_WORKER'), 'not delegated'\n"
            )
            env = {**os.environ, **dict.fromkeys(worker.THREAD_ENV, "1")}
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                subprocess.run(
                    [sys.executable, str(script), task], cwd=workdir, env=env, check=True
                )
                times.append(time.perf_counter() - t0)
        finally:
            worker.stop(servers)
    return statistics.median(times)


def job_shares(workdir: Path, jobs: list, tasks: list[str]) -> None:
    """Per task: training jobs' wall time split into start-up, training, evaluation, rest."""
    print("\nTraining-job time (wall time from the log; training and evaluation from result.json):")
    for task in tasks:
        train = [j for j in jobs if j.rule == "train" and j.wildcards.get("task") == task]
        if not train:
            continue
        wall = trained = evaluated = 0.0
        processes = {"worker": 0, "own": 0}
        for job in train:
            w = job.wildcards
            path = workdir / f"results/{task}/runs/{w['method']}/{w['name']}/seed{w['seed']}"
            result = json.loads((path / "result.json").read_text())
            metrics = result["metrics"]
            wall += job.seconds
            trained += metrics.get("train_time_s") or 0.0
            # Validation during training (what the search chooses on) is evaluation too.
            evaluated += (metrics.get("eval_time_s") or 0.0) + (metrics.get("valid_time_s") or 0.0)
            processes[result["provenance"].get("process", "own")] += 1
        print(
            f"  {task}: jobs forked from the local worker: {processes['worker']}, own: {processes['own']}"
        )
        startup = startup_seconds(workdir, task) * processes["own"] + (
            worker_startup_seconds(workdir, task) * processes["worker"]
            if processes["worker"]
            else 0.0
        )
        rest = wall - trained - evaluated - startup
        print(
            f"  {task}: {len(train)} jobs, {wall:.0f} s: start-up {startup / wall:.1%}, "
            f"training {trained / wall:.1%}, evaluation (validation and test) "
            f"{evaluated / wall:.1%}, rest "
            f"{rest / wall:.1%} (non-training non-evaluation {(wall - trained - evaluated) / wall:.1%}"
            ", target < 15%)"
        )


def timeline_figures(workdir: Path, tasks: list[str]) -> list:
    run = parse_log(latest_log(workdir))
    cores = run.cores or 1
    first = min(j.start for j in run.jobs)
    total = (max(j.end for j in run.jobs) - first).total_seconds()
    print(f"Run in {workdir} ({len(run.jobs)} jobs on {cores} cores): {total:.0f} s wall")
    for task, (until, span) in task_walls(run.jobs, tasks).items():
        print(f"  {task}: done {until:.0f} s after the start (its jobs span {span:.0f} s)")
    print(f"Idle share of the cores: {idle_share(run.jobs, cores):.1%} (target < 10%)")
    for start, end, running in busiest_gaps(run.jobs, cores):
        print(f"  cores idle from {start:.0f} s to {end:.0f} s (running: {running})")
    return run.jobs


def generate_experiments(workdir: Path, total: int) -> None:
    """Add distinct LoRA experiments to the math task until it has ``total`` (base included)."""
    root = workdir / "experiments/math"
    have = len({p.parent for p in root.glob("*/*/*.json")}) + 1
    adapter = json.loads((root / TEMPLATE / "adapter_config.json").read_text())
    for i in range(total - have):
        folder = root / TEMPLATE.split("/")[0] / f"generated-{i:04d}"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(
            json.dumps({**adapter, "lora_dropout": i / 1e4})
        )


def timed(cmd: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def dry_runs() -> None:
    print("\nsnakemake -n --config tasks=[math] (cold: nothing cached; warm: the second time):")
    for count in EXPERIMENT_COUNTS:
        with tempfile.TemporaryDirectory(prefix="peftbench-plan-") as tmp:
            workdir = copy_workflow(Path(tmp))
            generate_experiments(workdir, count)
            cmd = [*SNAKEMAKE, "-n", "--cores", "2", "--config", "tasks=[math]"]
            cold, proc = timed(cmd, workdir)
            if proc.returncode != 0:
                print(f"  {count}: failed\n{proc.stderr[-2000:]}")
                continue
            warm, _ = timed(cmd, workdir)
            print(f"  {count} experiments: {cold:.1f} s cold, {warm:.1f} s warm (target < 15 s)")


def noop_rerun(workdir: Path, cores: str, extra: list[str]) -> None:
    """Time the README's command (with ``extra`` arguments, e.g. the run's --configfile) in a
    finished run, if a dry run says it has nothing to do."""
    cmd = [*SNAKEMAKE, "--cores", cores, "--resources", "gpu=1", *extra]
    _, proc = timed([*cmd, "-n"], workdir)
    if "Nothing to be done" not in proc.stdout + proc.stderr:
        print("\nNo-op rerun: skipped, the run is not finished (a dry run plans jobs)")
        return
    seconds, _ = timed(cmd, workdir)
    print(f"\nNo-op rerun: {seconds:.1f} s (target < 5 s)")


def trainer_check(workdir: Path) -> None:
    from loop_vs_trainer import compare

    ratio = compare(workdir)
    verdict = "PASS" if ratio >= 0.95 else "FAIL"
    print(f"Own loop / Trainer tokens/s: {ratio:.3f} -> {verdict} (at least 0.95)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="a finished run (default: run one now)")
    parser.add_argument("--cores", default="all")
    parser.add_argument(
        "--skip", default="", help="comma-separated parts to skip: dry-runs, noop, trainer"
    )
    parser.add_argument(
        "--run-args", default="", help="more arguments of the run's snakemake command (no-op rerun)"
    )
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    workdir = args.workdir
    if workdir is None:
        workdir, _, code = run_workflow(None, None, args.cores)
        if code != 0:
            return code
    config = yaml.safe_load((workdir / "config/config.yaml").read_text())
    tasks = list(config["tasks"])
    jobs = timeline_figures(workdir, tasks)
    job_shares(workdir, jobs, tasks)
    if "dry-runs" not in skip:
        dry_runs()
    if "noop" not in skip:
        noop_rerun(workdir, args.cores, args.run_args.split())
    if "trainer" not in skip:
        trainer_check(workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())

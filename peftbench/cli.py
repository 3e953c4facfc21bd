"""Command line: ``peftbench advise`` and ``peftbench estimate-memory`` (also
``python -m peftbench ...``).

``advise`` reads a summary table and prints the methods on the noise-aware Pareto frontier that
fit a memory (and optionally time) budget, best first, with intervals and whether each one's
lead over the next is within noise; with ``--predicted`` it answers from the memory prediction
alone (no run needed). ``estimate-memory`` predicts every experiment's peak GPU memory of a
config (a preset) without a GPU or weights (:mod:`peftbench.core.estimate`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from peftbench.analysis.summary import (
    SOURCE_PUBLISHED,
    SOURCE_THIS_RUN,
    read_summary,
    table_item_scores,
)
from peftbench.cli_estimate import advise_predicted, estimate_command
from peftbench.cli_interop import add_interop_commands
from peftbench.report.advice import advise, format_advice, reference_row
from peftbench.tasks import registry


def default_summary(task: str, root: Path | str = "results") -> Path:
    """``results/summary.csv`` if it exists, else the task's own ``results/<task>/summary.csv``."""
    root = Path(root)
    cross_task = root / "summary.csv"
    return cross_task if cross_task.exists() else root / task / "summary.csv"


def results_root(summary_path: Path | str, task: str) -> Path | None:
    """The results folder holding ``<task>/runs`` next to (or above) a summary file."""
    folder = Path(summary_path).resolve().parent
    for candidate in (folder, folder.parent):
        if (candidate / task / "runs").is_dir():
            return candidate
    return None


def _task_packages(pairs: list[str]) -> dict[str, str]:
    """``--task-package NAME=FOLDER`` values as the config's ``task_packages`` mapping."""
    packages = {}
    for pair in pairs:
        name, sep, folder = pair.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"peftbench advise: --task-package {pair!r}: expected NAME=FOLDER")
        packages[name] = folder
    return packages


def _advise_command(args: argparse.Namespace) -> int:
    # A task outside the package (config task_packages) must be registered before its spec is read.
    registry.register_packages(_task_packages(args.task_package))
    known = [spec.name for spec in registry.known()]
    if args.task not in known:
        print(
            f"peftbench advise: unknown task {args.task!r} (known: {', '.join(known)}; a task "
            "outside the package needs --task-package NAME=FOLDER)",
            file=sys.stderr,
        )
        return 2
    summary_path = Path(args.summary) if args.summary else default_summary(args.task)
    if not summary_path.exists():
        print(
            f"peftbench advise: {summary_path} does not exist; run the workflow first or pass "
            "--summary",
            file=sys.stderr,
        )
        return 2
    summary = read_summary(summary_path)
    if not (summary["task"] == args.task).any():
        tasks = ", ".join(sorted(set(summary["task"].dropna())))
        print(
            f"peftbench advise: no task {args.task!r} in {summary_path} (tasks: {tasks})",
            file=sys.stderr,
        )
        return 2
    root = Path(args.results_dir) if args.results_dir else results_root(summary_path, args.task)
    task_rows = summary[summary["task"] == args.task]
    items, comparable_items = {}, {}
    if args.source == SOURCE_THIS_RUN:
        items = table_item_scores(task_rows, root)
        if args.published_score:
            # The rows hold the published-compatible score: resampled from its own item scores.
            comparable_items = table_item_scores(task_rows, root, comparable=True)
    frontier, _, notes = advise(
        summary,
        args.task,
        args.max_memory_gb,
        args.max_time_min,
        source=args.source,
        items=items,
        n_boot=args.n_boot,
        seed=args.seed,
        threshold=args.threshold,
        published_score=args.published_score,
        comparable_items=comparable_items,
    )
    # The reference in the same score as the methods it is read against.
    reference = reference_row(summary, args.task, args.source, args.published_score)
    print(
        format_advice(
            frontier,
            args.task,
            args.max_memory_gb,
            args.max_time_min,
            notes,
            source=args.source,
            reference=reference,
            n_boot=args.n_boot,
            threshold=args.threshold,
        )
    )
    return 0 if not frontier.empty else 1


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--configfile", default=None, help="config file to predict for (e.g. a preset)"
    )
    parser.add_argument(
        "--defaults",
        default="config/config.yaml",
        help="config the --configfile is merged over, as Snakemake does (default: %(default)s)",
    )
    parser.add_argument(
        "--estimates",
        default=None,
        help="read estimates that estimate-memory --json wrote",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peftbench",
        description="peftbench's command line (also python -m peftbench): advice from a run's "
        "results, memory predictions without a GPU, import from the published PEFT "
        "method-comparison suite's layout, and export to it, to MLflow or as a Hugging Face Hub "
        "dataset. Each command has its own --help.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    advise_parser = commands.add_parser(
        "advise",
        help="methods on the noise-aware Pareto frontier within a memory/time budget",
        description="Print the methods on the Pareto frontier (quality up, training memory "
        "and, with --max-time-min, time down) that fit the budget, best first, with 95% "
        "bootstrap intervals and whether each lead over the next method is within noise.",
    )
    tasks = registry.known()
    advise_parser.add_argument(
        "--task", required=True, help=f"task name ({', '.join(s.name for s in tasks)})"
    )
    advise_parser.add_argument(
        "--task-package",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="a task outside the package, as in the config's task_packages (repeatable)",
    )
    advise_parser.add_argument(
        "--max-memory-gb",
        type=float,
        required=True,
        help="training memory budget (GB = 1e9 B)",
    )
    advise_parser.add_argument(
        "--max-time-min",
        type=float,
        default=None,
        help="training time budget (minutes)",
    )
    advise_parser.add_argument(
        "--summary",
        default=None,
        help="summary table (.csv or .parquet); default results/summary.csv, else "
        "results/<task>/summary.csv",
    )
    advise_parser.add_argument(
        "--results-dir",
        default=None,
        help="folder with <task>/runs/.../<item file> for per-item intervals ("
        + ", ".join(f"{s.name}: {s.item_file}" for s in tasks)
        + "; default: found next to the summary)",
    )
    advise_parser.add_argument(
        "--source",
        # "this-run" is easier to type than the quoted "this run" of the tables.
        type=lambda text: text.replace("-", " ").replace("_", " "),
        choices=[SOURCE_THIS_RUN, SOURCE_PUBLISHED],
        metavar="{this-run,published}",
        default=SOURCE_THIS_RUN,
        help="which results to advise from (default: this-run)",
    )
    advise_parser.add_argument(
        "--published-score",
        action="store_true",
        help="score this run's rows as the published suite does (math: its answer parser), so "
        "they compare with --source published; their intervals resample the per-item scores of "
        "that rule where the item files record them (math: published_correct); default: this "
        "workflow's own score",
    )
    advise_parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap draws")
    advise_parser.add_argument("--seed", type=int, default=0, help="bootstrap random seed")
    advise_parser.add_argument(
        "--threshold",
        type=float,
        default=0.95,
        help="a lead is within noise when P(better) is below this (default 0.95)",
    )
    advise_parser.add_argument(
        "--predicted",
        action="store_true",
        help="answer from the memory prediction of --configfile (or --estimates) alone",
    )
    _add_config_arguments(advise_parser)
    advise_parser.set_defaults(
        handler=lambda args: (advise_predicted if args.predicted else _advise_command)(args)
    )
    estimate_parser = commands.add_parser(
        "estimate-memory",
        help="predict each experiment's peak GPU training memory without a GPU or weights",
        description="Build the config's architecture on the meta device from the shipped "
        "config files, wrap it with each experiment's adapter and account one training step "
        "at the config's dtype, batch size and longest sequence.",
    )
    estimate_parser.add_argument("--task", default=None, help="one task (default: the config's)")
    estimate_parser.add_argument("--json", default=None, help="also write the estimates here")
    _add_config_arguments(estimate_parser)
    estimate_parser.set_defaults(handler=estimate_command)
    add_interop_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``peftbench`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)

"""Command line: ``peftbench advise`` and ``peftbench estimate-memory`` (also
``python -m peftbench ...``).

``advise`` reads a summary table and prints the methods on the noise-aware Pareto frontier that
fit a memory (and optionally time) budget, best first, with intervals and whether each one's
lead over the next is within noise; with ``--predicted`` it answers from the memory prediction
alone (no run needed). ``estimate-memory`` predicts every experiment's peak GPU memory of a
config (a preset) without a GPU or weights (:mod:`peftbench.core.estimate`).

``--task`` is a choice of the tasks in the registry when the command line is parsed: the built-in
ones, those of ``--task-package NAME=FOLDER`` and those of the ``task_packages`` of
``--configfile`` (merged over ``--defaults``, as Snakemake does); these are registered before the
parser is built, so an external task is as much a choice as a built-in one. A summary can hold
other tasks (another config's); advising on one needs its package registered, since its spec
says how it is scored, and the error says how.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

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

#: ``--source`` choices (no spaces, so they need no quoting) -> the summary's ``source`` value.
SOURCES = {"this-run": SOURCE_THIS_RUN, "published": SOURCE_PUBLISHED}
#: Earlier spellings of ``--source`` still accepted, with a note: the tables' own "this run".
LEGACY_SOURCES = {"this run": "this-run", "this_run": "this-run"}
#: What an unknown ``--task`` is told besides argparse's list of choices.
TASK_HINT = (
    "a task outside the package needs --task-package NAME=FOLDER, or a --configfile whose "
    "task_packages names it"
)


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
            raise SystemExit(f"peftbench: --task-package {pair!r}: expected NAME=FOLDER")
        packages[name] = folder
    return packages


def _config_task_packages(configfile: str | None, defaults: str | None) -> dict[str, str]:
    """The ``task_packages`` of ``--configfile`` merged over ``--defaults`` (folders relative to
    the current folder, the workflow's); none without ``--configfile``."""
    if not configfile or not Path(configfile).is_file():
        return {}
    import yaml

    from peftbench.core.config import deep_merge

    config: dict = {}
    for path in (defaults, configfile):
        if path and Path(path).is_file():
            config = deep_merge(config, yaml.safe_load(Path(path).read_text("utf-8")) or {})
    return dict(config.get("task_packages") or {})


def register_tasks(argv: Sequence[str]) -> None:
    """Register the tasks of ``--task-package`` and of ``--configfile``'s ``task_packages``
    found in ``argv``, so that the parser offers them as ``--task`` choices."""
    early = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    early.add_argument("--task-package", action="append", default=[])
    early.add_argument("--configfile", default=None)
    early.add_argument("--defaults", default="config/config.yaml")
    known, _ = early.parse_known_args(argv)
    registry.register_packages(_config_task_packages(known.configfile, known.defaults))
    registry.register_packages(_task_packages(known.task_package))


def _source(text: str) -> str:
    """A ``--source`` value; the earlier spelling "this run" is still read, with a note."""
    if text in LEGACY_SOURCES:
        print(
            f"peftbench advise: --source {text!r} is the earlier spelling of "
            f"{LEGACY_SOURCES[text]}; it will go",
            file=sys.stderr,
        )
        return LEGACY_SOURCES[text]
    return text


class _Parser(argparse.ArgumentParser):
    """argparse's parser (its subparsers too), whose error for ``--task`` says how to add one."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument --task:"):
            message = f"{message}; {TASK_HINT}"
        super().error(message)


def _advise_command(args: argparse.Namespace) -> int:
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
    source = SOURCES[args.source]
    items, comparable_items = {}, {}
    if source == SOURCE_THIS_RUN:
        items = table_item_scores(task_rows, root)
        if args.published_score:
            # The rows hold the published-compatible score: resampled from its own item scores.
            comparable_items = table_item_scores(task_rows, root, comparable=True)
    frontier, _, notes = advise(
        summary,
        args.task,
        args.max_memory_gb,
        args.max_time_min,
        source=source,
        items=items,
        n_boot=args.n_boot,
        seed=args.seed,
        threshold=args.threshold,
        published_score=args.published_score,
        comparable_items=comparable_items,
    )
    # The reference in the same score as the methods it is read against.
    reference = reference_row(summary, args.task, source, args.published_score)
    print(
        format_advice(
            frontier,
            args.task,
            args.max_memory_gb,
            args.max_time_min,
            notes,
            source=source,
            reference=reference,
            n_boot=args.n_boot,
            threshold=args.threshold,
        )
    )
    return 0 if not frontier.empty else 1


def _add_task_package_argument(parser: argparse.ArgumentParser) -> None:
    # Read by register_tasks before this parser is built; here for --help.
    parser.add_argument(
        "--task-package",
        action="append",
        default=[],
        metavar="NAME=FOLDER",
        help="a task outside the package, as in the config's task_packages (repeatable)",
    )


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
    """The parser; its ``--task`` choices are the tasks registered now (:func:`register_tasks`)."""
    parser = _Parser(
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
    task_names = [spec.name for spec in tasks]
    advise_parser.add_argument(
        "--task",
        required=True,
        choices=task_names,
        help=f"the task to advise on; {TASK_HINT}",
    )
    _add_task_package_argument(advise_parser)
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
        type=_source,
        choices=list(SOURCES),
        default="this-run",
        help="which results to advise from: this run's or the published suite's (default: "
        "%(default)s; 'this run', the earlier spelling, is still read)",
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
    estimate_parser.add_argument(
        "--task",
        default=None,
        choices=task_names,
        help=f"one task (default: the config's tasks); {TASK_HINT}",
    )
    _add_task_package_argument(estimate_parser)
    estimate_parser.add_argument("--json", default=None, help="also write the estimates here")
    _add_config_arguments(estimate_parser)
    estimate_parser.set_defaults(handler=estimate_command)
    add_interop_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``peftbench`` command; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        register_tasks(argv)
    except registry.UnknownTaskError as exc:
        print(f"peftbench: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    return args.handler(args)

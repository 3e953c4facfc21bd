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

import numpy as np
import pandas as pd

from peftbench.analysis.comparable import SCORE_COLUMN, items_for, scored_column, with_score
from peftbench.analysis.noise import Bootstrap, task_frontier
from peftbench.analysis.summary import (
    SOURCE_PUBLISHED,
    SOURCE_THIS_RUN,
    read_summary,
    table_item_scores,
)
from peftbench.cli_estimate import advise_predicted, estimate_command
from peftbench.cli_interop import add_interop_commands
from peftbench.report.advice import format_advice
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


def advise(
    summary: pd.DataFrame,
    task: str,
    max_memory_gb: float,
    max_time_min: float | None = None,
    *,
    source: str = SOURCE_THIS_RUN,
    items: dict | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    threshold: float = 0.95,
    published_score: bool = False,
    comparable_items: dict | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Frontier experiments of ``task`` within the budget, best first.

    The frontier is computed among the experiments that fit the budget (mean over seeds of
    ``train_memory_gb`` <= ``max_memory_gb`` and, when given, ``train_time_min`` <=
    ``max_time_min``), over quality (max), memory (min) and, with a time budget, time (min).
    Returns ``(frontier, all_experiments, notes)``: the frontier rows of
    :func:`peftbench.analysis.noise.frontier_probability` (best quality first), every
    experiment of the task and source with its frontier columns, and notes on what was left
    out and why. With ``published_score``, this run's rows are scored as the published suite
    scores (:mod:`peftbench.analysis.comparable`), resampled with ``comparable_items`` (their
    per-item scores of that score) instead of ``items``.
    """
    spec = registry.get(task)
    quality = spec.quality.name
    rows = summary[(summary["task"] == task) & (summary["source"] == source)]
    notes: list[str] = []
    rows = with_score(rows, spec, published_score)
    scored = scored_column(spec, published_score and source == SOURCE_THIS_RUN)
    if scored != quality and not comparable_items:
        notes.append(
            f"this run's rows are scored by {scored}, whose per-item scores are not recorded: "
            "their intervals cover seeds only, and a single run has none"
        )
    if rows.empty:
        return pd.DataFrame(), pd.DataFrame(), [*notes, f"no {source} results for task {task}"]
    failed = rows[rows["status"] != "success"]
    if len(failed):
        names = ", ".join(sorted(set(failed["experiment"])))
        notes.append(f"{len(failed)} failed run(s) left out: {names}")
    ok = rows[rows["status"] == "success"]
    budget = {"train_memory_gb": max_memory_gb}
    if max_time_min is not None:
        budget["train_time_min"] = max_time_min
    means = ok.groupby("experiment")[list(budget)].mean()
    unmeasured = means[means.isna().any(axis=1)].index.tolist()
    if unmeasured:
        notes.append(
            f"no {'/'.join(budget)} measured (cannot check the budget): "
            + ", ".join(sorted(unmeasured))
        )
    fits = means.dropna()
    for column, limit in budget.items():
        fits = fits[fits[column] <= limit]
    over = sorted(set(means.dropna().index) - set(fits.index))
    if over:
        notes.append(f"{len(over)} experiment(s) over the budget: " + ", ".join(over))
    candidates = ok[ok["experiment"].isin(fits.index)]
    if candidates.empty:
        return pd.DataFrame(), pd.DataFrame(), notes
    if scored != quality and comparable_items:
        # Some runs have the item scores, others (e.g. results older than them) do not: those
        # stay in the comparison, resampled over seeds only, as when none has them.
        lacking = candidates[
            (candidates[SCORE_COLUMN] == scored) & ~candidates.index.isin(list(comparable_items))
        ]
        if not lacking.empty:
            runs = ", ".join(
                f"{row.experiment} seed {row.seed:g}"
                for row in lacking.sort_values(["experiment", "seed"]).itertuples()
            )
            notes.append(
                f"{len(lacking)} run(s) scored by {scored} have no per-item scores of it "
                f"recorded ({runs}): they are compared all the same, without resampling "
                "their test items (a single such run has no interval)"
            )
    objectives = {quality: "max", **{column: "min" for column in budget}}
    table = task_frontier(
        candidates,
        objectives,
        spec,
        items_for(candidates, spec, items, comparable_items),
        Bootstrap(n_boot=n_boot, seed=seed, threshold=threshold),
    )
    labels = ok.groupby("experiment")[["family", "score"]].first()
    table = table.join(labels, on="experiment")
    frontier = table[table["on_frontier"]].reset_index(drop=True)
    return frontier, table, notes


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
    spec = registry.get(args.task)
    base = task_rows[(task_rows["family"] == "base") & (task_rows["source"] == args.source)]
    # The reference in the same score as the methods it is read against.
    base = with_score(base, spec, args.published_score)
    reference = None
    if not base.empty:
        reference = base.iloc[0].copy()
        quality = spec.quality.name
        reference[quality] = float(np.nanmean(base[quality].to_numpy(dtype=float)))
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
        "--estimates", default=None, help="read estimates that estimate-memory --json wrote"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peftbench",
        description="peftbench's command line (also python -m peftbench): advice from a run's "
        "results, memory predictions without a GPU, and import and export in the published "
        "PEFT method-comparison suite's layouts. Each command has its own --help.",
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
        "--max-memory-gb", type=float, required=True, help="training memory budget (GB = 1e9 B)"
    )
    advise_parser.add_argument(
        "--max-time-min", type=float, default=None, help="training time budget (minutes)"
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

"""The interoperability commands of the CLI (registered in :mod:`peftbench.cli`):
``peftbench import-experiments`` copies the published suite's experiment folders into this
workflow's layout; ``peftbench export --to TARGET DEST`` writes this workflow's results
elsewhere (:mod:`peftbench.interop`): in the suite's result layout (``hf-method-comparison``),
to an MLflow tracking store (``mlflow``) or as a Hugging Face Hub dataset folder
(``hub-dataset``). ``--format`` is the earlier spelling of ``--to``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peftbench.interop import hub_dataset, mlflow_export
from peftbench.interop.run_results import ExportError
from peftbench.interop.suite_export import FORMAT, export_results
from peftbench.interop.suite_import import ImportSourceError, import_experiments

#: Export targets and what DEST is for each.
TARGETS = {
    FORMAT: "the published suite's result layout, DEST a folder",
    mlflow_export.TARGET: "one MLflow run per experiment and seed, DEST a tracking URI",
    hub_dataset.TARGET: "the summary table as a Hub dataset, DEST a folder",
}
#: Options that only some targets read (argparse dest -> targets), so that one given to another
#: target is an error instead of being ignored.
TARGET_OPTIONS = {
    "fill_for_app": (FORMAT,),
    "all_points": (FORMAT, mlflow_export.TARGET),
    "experiment_name": (mlflow_export.TARGET,),
    "artifact_location": (mlflow_export.TARGET,),
    "with_adapter": (mlflow_export.TARGET,),
    "summary": (hub_dataset.TARGET,),
    "license": (hub_dataset.TARGET,),
}


def _run(command: str, action: Callable[[], Any], error: type[Exception]) -> int:
    """Exit 0 when ``action``'s report is all good, 1 when it refused something, 2 when it
    raised ``error`` (nothing could be done), printing the report or the error."""
    try:
        report = action()
    except error as exc:
        print(f"peftbench {command}: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def import_command(args: argparse.Namespace) -> int:
    """Import; exit 0 when every selected folder was imported (or already there), 1 when some
    were refused, 2 when nothing could be imported."""
    return _run(
        "import-experiments",
        lambda: import_experiments(
            args.source, args.into, args.select, force=args.force, dry_run=args.dry_run
        ),
        ImportSourceError,
    )


def _misplaced(args: argparse.Namespace) -> list[str]:
    """The options given that ``args.to`` does not read."""
    return [
        "--" + dest.replace("_", "-")
        for dest, targets in TARGET_OPTIONS.items()
        if args.to not in targets and getattr(args, dest) not in (None, False)
    ]


def export_command(args: argparse.Namespace) -> int:
    """Export; exit 0 when everything was written (or unchanged), 1 when something was refused
    or a result file was invalid, 2 when nothing could be exported."""
    misplaced = _misplaced(args)
    if misplaced:
        print(
            f"peftbench export: {', '.join(misplaced)} do(es) not apply to --to {args.to}",
            file=sys.stderr,
        )
        return 2
    actions = {
        FORMAT: lambda: export_results(
            args.results,
            args.destination,
            patterns=args.select,
            fill_for_app=args.fill_for_app,
            force=args.force,
            all_points=args.all_points,
        ),
        mlflow_export.TARGET: lambda: mlflow_export.export_mlflow(
            args.results,
            args.destination,
            patterns=args.select,
            all_points=args.all_points,
            force=args.force,
            experiment_name=args.experiment_name or mlflow_export.DEFAULT_EXPERIMENT,
            artifact_location=args.artifact_location,
            with_adapter=args.with_adapter,
        ),
        hub_dataset.TARGET: lambda: hub_dataset.export_hub_dataset(
            args.summary or Path(args.results) / "summary.parquet",
            args.destination,
            patterns=args.select,
            force=args.force,
            license_id=args.license,
        ),
    }
    return _run("export", actions[args.to], ExportError)


def _select_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="GLOB",
        help="only experiments whose id <method>/<name> matches (repeatable; e.g. 'lora/*')",
    )


def add_interop_commands(commands: Any) -> None:
    """Register ``import-experiments`` and ``export`` on the CLI's subparsers."""
    importer = commands.add_parser(
        "import-experiments",
        help="copy the published suite's experiment folders into an experiments folder",
        description="Copy the suite's <method>/<name>/ experiment folders (adapter_config.json "
        "and/or training_params.json) into this workflow's experiments layout, keeping their "
        "ids and the files as the suite wrote them (a folder without an adapter config outside "
        "full-finetuning/ gets the FULL_FINETUNING marker, which this layout asks for). Folders "
        "the workflow would refuse, and existing folders with other contents, are reported and "
        "not copied. Then check the imported experiments with the workflow's dry run.",
    )
    importer.add_argument(
        "source",
        help="the suite's experiments folder, e.g. method_comparison/MetaMathQA/experiments",
    )
    importer.add_argument(
        "--into", required=True, help="experiments folder to copy into (e.g. a preset's)"
    )
    _select_argument(importer)
    importer.add_argument(
        "--force", action="store_true", help="replace existing folders with other contents"
    )
    importer.add_argument(
        "--dry-run", action="store_true", help="report what would be imported; write nothing"
    )
    importer.set_defaults(handler=import_command)

    exporter = commands.add_parser(
        "export",
        help="write run results to the published suite's layout, MLflow or a Hub dataset",
        description="Write this workflow's results elsewhere. "
        f"--to {FORMAT}: every run result as the suite's result document (run_info, "
        "train_info, meta_info) in DEST/<suite task>/results/<method>--<name>.json "
        "(MetaMathQA for math, image-gen for image; failed runs in temporary_results/), which "
        "the suite's app and this workflow's config entry published: read; fields this "
        "workflow does not measure are written as NaN/null and listed. "
        f"--to {mlflow_export.TARGET}: one MLflow run per experiment and seed in the tracking "
        "store DEST (e.g. sqlite:///mlflow.db, http://host:5000, or file:///path/mlruns with "
        "MLFLOW_ALLOW_FILE_STORE=true), in the MLflow experiment peftbench-<task>: params "
        "(effective training config, PEFT config, provenance), final metrics, curves as step "
        "metrics, the run folder's files as artifacts; needs the export extra "
        f"({mlflow_export.EXTRA_HINT}). "
        f"--to {hub_dataset.TARGET}: the summary table (results/summary.parquet) as "
        "DEST/data/summary.parquet with a dataset card DEST/README.md, ready to upload to the "
        "Hugging Face Hub. "
        "Of a search grid only the point chosen on validation is exported.",
    )
    exporter.add_argument(
        "--to",
        "--format",
        dest="to",
        required=True,
        choices=list(TARGETS),
        metavar="TARGET",
        help="where to export: "
        + "; ".join(f"{name} ({what})" for name, what in TARGETS.items())
        + "; --format is the earlier spelling",
    )
    exporter.add_argument(
        "destination",
        metavar="DEST",
        help=f"folder to write into ({FORMAT}: it takes the place of the suite's "
        f"method_comparison/; {hub_dataset.TARGET}: the dataset folder) or, for "
        f"{mlflow_export.TARGET}, the tracking URI",
    )
    exporter.add_argument(
        "--results", default="results", help="results folder to read (default: %(default)s)"
    )
    _select_argument(exporter)
    exporter.add_argument(
        "--force",
        action="store_true",
        help="replace what an earlier export wrote with other contents (documents, files, "
        "MLflow runs)",
    )
    exporter.add_argument(
        "--all-points",
        action="store_true",
        help="export every point of each search grid, not only the one chosen on validation "
        f"({FORMAT}, {mlflow_export.TARGET})",
    )
    exporter.add_argument(
        "--fill-for-app",
        action="store_true",
        help=f"{FORMAT}: write stand-ins (named in each document) for the unmeasured integers "
        "the suite's app needs to load a file: memory peak for the reserved average and 99th "
        "percentile, training plus evaluation time for the total time, an upper bound of "
        "training samples",
    )
    exporter.add_argument(
        "--experiment-name",
        default=None,
        metavar="NAME",
        help=f"{mlflow_export.TARGET}: the MLflow experiment; {{task}} is replaced by the task "
        f"(default: {mlflow_export.DEFAULT_EXPERIMENT})",
    )
    exporter.add_argument(
        "--artifact-location",
        default=None,
        metavar="URI",
        help=f"{mlflow_export.TARGET}: where an experiment this export creates keeps its "
        "artifacts (default: the store's; for sqlite:/// that is ./mlruns below the current "
        "folder)",
    )
    exporter.add_argument(
        "--with-adapter",
        action="store_true",
        help=f"{mlflow_export.TARGET}: log the saved adapter folder too (a full fine-tuning run "
        "saves the whole model there)",
    )
    exporter.add_argument(
        "--summary",
        default=None,
        help=f"{hub_dataset.TARGET}: the summary table to export (.parquet or .csv; default: "
        "<results>/summary.parquet)",
    )
    exporter.add_argument(
        "--license",
        default=None,
        metavar="ID",
        help=f"{hub_dataset.TARGET}: the dataset card's license (a Hub license id, e.g. "
        "cc-by-4.0; default: none, and the card says to add one)",
    )
    exporter.set_defaults(handler=export_command)

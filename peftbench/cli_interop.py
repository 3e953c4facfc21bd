"""The interoperability commands of the CLI (registered in :mod:`peftbench.cli`):
``peftbench import-experiments`` copies the published suite's experiment folders into this
workflow's layout, ``peftbench export --format hf-method-comparison`` writes this workflow's
results in the suite's result layout (:mod:`peftbench.interop`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from peftbench.interop.suite_export import FORMAT, ExportError, export_results
from peftbench.interop.suite_import import ImportSourceError, import_experiments


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


def export_command(args: argparse.Namespace) -> int:
    """Export; exit 0 when every run was written (or unchanged), 1 when a document was refused
    or a result file was invalid, 2 when nothing could be exported."""
    return _run(
        "export",
        lambda: export_results(
            args.results,
            args.out,
            patterns=args.select,
            fill_for_app=args.fill_for_app,
            force=args.force,
            all_points=args.all_points,
        ),
        ExportError,
    )


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
        help="write run results in the published suite's result layout",
        description="Write every run result as the suite's result document (run_info, "
        "train_info, meta_info) into OUT/<suite task>/results/<method>--<name>.json "
        "(MetaMathQA for math, image-gen for image; failed runs in temporary_results/), which "
        "the suite's app and `published:` of this workflow read. Fields this workflow does not "
        "measure are written as NaN/null and listed, in the output and in each document's "
        "peftbench block.",
    )
    exporter.add_argument(
        "--format", required=True, choices=[FORMAT], help="result layout to write"
    )
    exporter.add_argument(
        "out", help="folder to write into (it takes the place of the suite's method_comparison/)"
    )
    exporter.add_argument(
        "--results", default="results", help="results folder to read (default: %(default)s)"
    )
    _select_argument(exporter)
    exporter.add_argument(
        "--fill-for-app",
        action="store_true",
        help="write stand-ins (named in each document) for the unmeasured integers the suite's "
        "app needs to load a file: memory peak for the reserved average and 99th percentile, "
        "training plus evaluation time for the total time, an upper bound of training samples",
    )
    exporter.add_argument(
        "--force", action="store_true", help="overwrite documents with other contents"
    )
    exporter.add_argument(
        "--all-points",
        action="store_true",
        help="export every point of each search grid, not only the one chosen on validation",
    )
    exporter.set_defaults(handler=export_command)

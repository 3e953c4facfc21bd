"""The memory-prediction commands of the CLI: ``peftbench estimate-memory`` and
``peftbench advise --predicted`` (registered in :mod:`peftbench.cli`). Torch is imported only
when a command runs, so the rest of the CLI stays fast."""

from __future__ import annotations

import argparse
import sys
import time


def _load_estimates(args: argparse.Namespace) -> dict:
    """Estimates from ``--estimates`` (a file estimate-memory wrote) or computed now."""
    from peftbench.core.estimate import estimate_config, load_config, read_estimates

    if args.estimates:
        return read_estimates(args.estimates)
    config = load_config(args.configfile, args.defaults)
    tasks = [args.task] if args.task else None

    def progress(e: object) -> None:
        print(f"  estimated {e.experiment} ({e.seconds:.1f} s)", file=sys.stderr, flush=True)

    return estimate_config(config, tasks, progress)


def estimate_command(args: argparse.Namespace) -> int:
    """Print (and with ``--json`` write) every experiment's predicted peak by category."""
    from peftbench.core.estimate import format_estimates, write_estimates

    if not args.configfile and not args.estimates:
        print("peftbench estimate-memory: pass --configfile (or --estimates)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    estimates = _load_estimates(args)
    elapsed = time.perf_counter() - started
    for task, items in estimates.items():
        title = (
            f"{task}: predicted peak live-tensor memory of a training step, GB (1e9 bytes); "
            "the GPU's allocator reserves somewhat more (see benchmarks/memory_prediction.py)"
        )
        print(format_estimates(items, title), end="\n\n")
    count = sum(len(items) for items in estimates.values())
    failed = sum(e.error is not None for items in estimates.values() for e in items)
    print(f"{count} experiments estimated in {elapsed:.1f} s ({failed} could not be estimated)")
    if args.json:
        write_estimates(args.json, estimates)
    return 0 if count > failed else 1


def advise_predicted(args: argparse.Namespace) -> int:
    """Which experiments fit ``--max-memory-gb`` by the prediction alone."""
    if not args.configfile and not args.estimates:
        print("peftbench advise --predicted: pass --configfile or --estimates", file=sys.stderr)
        return 2
    items = _load_estimates(args).get(args.task, [])
    ok = sorted((e for e in items if e.error is None), key=lambda e: e.peak_bytes)
    fits = [e for e in ok if e.gb() <= args.max_memory_gb]
    lines = [
        f"PREDICTED (no training run): {args.task} experiments whose predicted peak training "
        f"memory fits {args.max_memory_gb:g} GB, smallest first. Quality is not predicted; "
        "the allocator needs some headroom above these live-tensor figures.",
    ]
    lines += [f"  {e.experiment:34} {e.gb():7.2f} GB predicted" for e in fits]
    over = [e for e in ok if e not in fits]
    if over:
        lines.append(
            "Over the budget: " + ", ".join(f"{e.experiment} ({e.gb():.1f})" for e in over)
        )
    failed = [e.experiment for e in items if e.error is not None]
    if failed:
        lines.append("Not estimated: " + ", ".join(failed))
    print("\n".join(lines))
    return 0 if fits else 1

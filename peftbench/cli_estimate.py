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
            f"{task}: predicted peak memory of training, GB (1e9 bytes): live tensors, what "
            "the CUDA caching allocator reserves for them, and the live peak by category "
            "(validated in benchmarks/memory_prediction.py)"
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

    def figure(e: object) -> float:
        # What the GPU must have free: the allocator's reserve over training and evaluation
        # where it was modelled, else the live tensors.
        reserved = e.reserved_gb(with_evaluation=True)
        return e.gb() if reserved is None else reserved

    ok = sorted((e for e in items if e.error is None), key=figure)
    fits = [e for e in ok if figure(e) <= args.max_memory_gb]
    lines = [
        f"PREDICTED (no training run): {args.task} experiments whose predicted peak memory "
        f"(what the CUDA caching allocator reserves) fits {args.max_memory_gb:g} GB, smallest "
        "first. Quality is not predicted.",
    ]
    lines += [f"  {e.experiment:34} {figure(e):7.2f} GB predicted" for e in fits]
    over = [e for e in ok if e not in fits]
    if over:
        lines.append(
            "Over the budget: " + ", ".join(f"{e.experiment} ({figure(e):.1f})" for e in over)
        )
    failed = [e.experiment for e in items if e.error is not None]
    if failed:
        lines.append("Not estimated: " + ", ".join(failed))
    print("\n".join(lines))
    return 0 if fits else 1

"""Pinned CPU numerics: the same bits on every x86-64 CPU with AVX2.

torch picks its vectorised kernels by the CPU's instruction sets (AVX2, AVX-512), and MKL and
oneDNN choose their code paths by CPU model and vendor. Each choice rounds differently, and the
embedded pretraining amplifies the differences into base models of different ability, so an
unpinned benchmark gives other numbers on another CPU (issue 11). Setting the choices explicitly
(config ``cpu_numerics``) makes every machine take the same path. Torch-free: the workflow
applies it while the DAG is built, before any job (or torch) starts, and jobs inherit it.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping, MutableMapping

#: Machines the pins apply to: elsewhere (ARM) the settings name instruction sets that do not
#: exist, so each machine keeps its own kernels and the results are only as close as floats are.
X86_64 = frozenset({"x86_64", "amd64"})


def apply(
    pins: Mapping[str, str] | None,
    environ: MutableMapping[str, str] = os.environ,
    machine: str | None = None,
) -> dict[str, str]:
    """Set ``pins`` (environment variable -> value) in ``environ`` on an x86-64 machine; return
    what was set ({} elsewhere or without pins). Pins win over the caller's own settings: a
    benchmark's numbers must not depend on what the shell happened to export."""
    machine = (machine or platform.machine()).lower()
    if not pins or machine not in X86_64:
        return {}
    environ.update({name: str(value) for name, value in pins.items()})
    return dict(pins)

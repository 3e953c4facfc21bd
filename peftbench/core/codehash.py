"""Which package code a job runs: the import closure of its entry script, and its hash.

A rule's outputs depend on every ``peftbench`` module its script imports, directly or through
other modules, at the top or inside a function. The hash of those files is a rule parameter, so
editing any of them reruns exactly the jobs that run it; the list is computed from the code, never
kept by hand. Static on purpose (the ``ast`` of each file, nothing imported): it runs while the DAG
is built, without torch.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path

from peftbench.core.config import file_hash

PACKAGE = "peftbench"
ROOT = Path(__file__).resolve().parents[1]


def module_file(module: str, roots: Mapping[str, Path] | None = None) -> Path | None:
    """The file of a module or package of ``roots`` (top-level package name -> folder; by
    default ``peftbench`` alone), None for anything else (the standard library, torch, ...)."""
    roots = roots or {PACKAGE: ROOT}
    parts = module.split(".")
    if parts[0] not in roots:
        return None
    base = roots[parts[0]].joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path, roots: Mapping[str, Path]) -> str | None:
    for package, folder in roots.items():
        try:
            relative = path.resolve().relative_to(Path(folder).resolve())
        except ValueError:
            continue
        parts = [package, *relative.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        return ".".join(parts)
    return None


def _imports(path: Path, roots: Mapping[str, Path]) -> frozenset[str]:
    """Modules ``path`` imports anywhere in its body (absolute names; relative ones resolved).
    Parsed once per content of the file: a DAG build hashes overlapping closures (one per
    rule), and parsing was most of their cost."""
    return _parsed_imports(path, path.read_text(encoding="utf-8"), tuple(roots.items()))


@cache
def _parsed_imports(
    path: Path, text: str, roots_items: tuple[tuple[str, Path], ...]
) -> frozenset[str]:
    roots = dict(roots_items)
    tree = ast.parse(text, filename=str(path))
    own = _module_name(path, roots) or ""
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # "from peftbench.tasks.math import data" imports the submodule data.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(found)


def closure(
    entries: Iterable[Path | str], packages: Mapping[str, Path | str] | None = None
) -> list[Path]:
    """Every ``peftbench`` file reachable by imports from ``entries`` (scripts, package files or
    dotted module names), including the parent packages' ``__init__.py``; sorted, unique.

    ``packages``: further top-level packages to follow, name -> folder (a task package outside
    peftbench, imported by the registry under its own name), so that its modules count too.
    """
    roots = {PACKAGE: ROOT, **{name: Path(folder) for name, folder in (packages or {}).items()}}
    todo: list[Path] = []
    for entry in entries:
        is_module = isinstance(entry, str) and "/" not in entry
        path = module_file(entry, roots) if is_module else Path(entry)
        if path is None or not path.is_file():
            raise FileNotFoundError(f"no such script or peftbench module: {entry}")
        todo.append(path.resolve())
        # Importing a module runs the packages above it first.
        parts = (_module_name(path, roots) or "").split(".")
        for end in range(1, len(parts)):
            parent = module_file(".".join(parts[:end]), roots)
            if parent is not None:
                todo.append(parent.resolve())
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in _imports(path, roots):
            parts = module.split(".")
            # The module and every package above it run on import.
            for end in range(1, len(parts) + 1):
                found = module_file(".".join(parts[:end]), roots)
                if found is not None and found.resolve() not in seen:
                    todo.append(found.resolve())
    entries_outside = {p for p in seen if _module_name(p, roots) is None}
    return sorted(seen - entries_outside) + sorted(entries_outside)


def code_hash(
    entries: Iterable[Path | str], packages: Mapping[str, Path | str] | None = None
) -> str:
    """sha256 over the files of :func:`closure` (scripts included)."""
    return file_hash(closure(entries, packages))

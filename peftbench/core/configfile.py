"""The workflow's config files, checked as a whole while the DAG is built: each file re-read
with duplicate keys refused, the merged config against the JSON schemas with every error at its
key path, and every error blamed on the file(s) that set that key.

Snakemake merges ``--configfile`` files silently (a duplicate YAML key: the last one wins) and
its schema errors name neither the file nor, readably, the key; this module does both. Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from peftbench.core.config import ConfigError, did_you_mean

KeyPath = tuple[Any, ...]


def key_path(path: Iterable[Any]) -> str:
    """``math.training.max_steps``; list items as ``seeds[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def _duplicates(node: yaml.Node, path: KeyPath, source: str) -> list[str]:
    """Duplicate mapping keys anywhere below ``node`` (a composed, not yet constructed, tree:
    constructing it would already have kept only the last value)."""
    problems = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            line = key_node.start_mark.line + 1
            # "<<" merges an anchor in: its keys are meant to be overridden.
            if key is not None and key != "<<":
                if key in seen:
                    problems.append(
                        f"{source}, line {line}: duplicate key '{key_path((*path, key))}' (first "
                        f"at line {seen[key]}; YAML would silently keep the last one)"
                    )
                seen.setdefault(key, line)
            problems += _duplicates(value_node, (*path, key), source)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            problems += _duplicates(item, (*path, index), source)
    return problems


def load_config_file(path: Path | str) -> dict[str, Any]:
    """One config file as a dict; ConfigError naming the file (and line, key) if it cannot be
    read, is not YAML/JSON, is not a mapping or repeats a key."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML or JSON: {exc}") from None
    problems = _duplicates(node, (), str(path)) if node is not None else []
    if problems:
        raise ConfigError("\n".join(problems))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def sources_of(path: Sequence[Any], files: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Where the value at ``path`` comes from: ``files`` (name -> content) are in precedence
    order, so the last one that sets ``path`` is the one whose value counts; failing that, every
    file that sets the deepest part of it; the command line's ``--config`` when none does."""
    setting = [name for name, data in files.items() if _has(data, path)]
    if setting:
        return setting[-1:]
    for depth in range(len(path) - 1, 0, -1):
        found = [name for name, data in files.items() if _has(data, path[:depth])]
        if found:
            return found
    return ["--config (command line)"] if path else list(files)


def _has(data: Any, path: Sequence[Any]) -> bool:
    for part in path:
        if isinstance(data, Mapping) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return False
    return True


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def schema_problems(
    instance: Mapping[str, Any], schema_file: Path | str, prefix: KeyPath = ()
) -> list[tuple[KeyPath, str]]:
    """Every violation of the JSON schema in ``schema_file`` (YAML) as (key path, message);
    ``prefix``: where ``instance`` sits in the whole config (a task's section)."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_file).read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    found = []
    for error in validator.iter_errors(instance):
        path = (*prefix, *error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            known = list(error.schema.get("properties", {}))
            for key in error.instance:
                if key not in known:
                    hint = did_you_mean(key, known)
                    listed = ", ".join(known)
                    found.append(((*path, key), f"unknown key{hint} (known: {listed})"))
            continue
        message = error.message
        if len(message) > 200:
            # jsonschema quotes the whole offending value, which for a section is pages long;
            # the key path already says where it is.
            message = f"{_short(error.instance)} fails {error.validator!r}: {error.validator_value}"
        found.append((path, message))
    return sorted(found, key=lambda item: [str(p) for p in item[0]])


def blame(
    problems: Iterable[tuple[KeyPath, str]], files: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """``<files>: <key path>: <message>`` for each problem, naming the files that set the key."""
    return [
        f"{', '.join(sources_of(path, files))}: {key_path(path)}: {msg}" for path, msg in problems
    ]


def by_precedence(loaded: Sequence[Any], command_line: Sequence[Any]) -> list[Any]:
    """Snakemake's ``workflow.configfiles`` in the order their values win: the Snakefile's own
    ``configfile:`` first (it is read last, but the command line's files are laid over it), then
    the ``--configfile`` files in the order given."""
    cli = [str(f) for f in command_line]
    return [f for f in loaded if str(f) not in cli] + [f for f in loaded if str(f) in cli]

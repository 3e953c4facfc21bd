"""Where the pre-flight check (peftbench.core.validate) finds a hub base model's architecture,
and what it says when it cannot, without the hub's minute of retries.

In this order: a ``model_id`` that is a local folder is read as it is; a model whose
architecture config is shipped in the repository (``config/presets/architectures/<model id>/``,
laid out as the hub repository: ``config.json``, or ``transformer/config.json`` for a diffusion
pipeline) is read from there, offline; any other model is read through the Hugging Face cache
and hub, and when the hub is unreachable (``HF_HUB_OFFLINE`` set, or no connection within
:data:`CONNECT_TIMEOUT_S`) from the cache only, so that a missing file fails at once with
:func:`missing_architecture`'s message rather than after retries.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from peftbench.core.layout import ARCHITECTURES

#: Seconds the reachability probe waits for a TCP connection to the hub.
CONNECT_TIMEOUT_S = 3.0

#: The config field that names a hub base model, below a task's section.
MODEL_FIELD = "base_model.hub.model_id"


def hub_model_id(task_cfg: Mapping[str, Any]) -> str | None:
    """The task's hub base model id (``base_model.hub.model_id``); None for an embedded one."""
    model = task_cfg.get("base_model") or {}
    if model.get("source") != "hub":
        return None
    return (model.get("hub") or {}).get("model_id")


def shipped(model_id: str) -> Path | None:
    """The repository's architecture folder of ``model_id``, if it ships one."""
    folder = ARCHITECTURES / model_id
    return folder if folder.is_dir() else None


def with_local_architecture(task_cfg: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """``task_cfg`` with a hub model whose architecture is shipped pointed at that folder (the
    pre-flight check then reads no hub file), and a note saying so; unchanged otherwise."""
    cfg = copy.deepcopy(dict(task_cfg))
    model_id = hub_model_id(cfg)
    if not model_id or Path(model_id).expanduser().is_dir():
        return cfg, None
    folder = shipped(model_id)
    if folder is None:
        return cfg, None
    cfg["base_model"]["hub"] = {**cfg["base_model"]["hub"], "model_id": str(folder)}
    cfg["base_model"]["hub"].pop("revision", None)
    return cfg, f"architecture of {model_id} read from {folder} (shipped), not from the hub"


@cache
def hub_reachable() -> bool:
    """Whether the hub answers: False when ``HF_HUB_OFFLINE`` is set or no TCP connection to its
    endpoint opens within :data:`CONNECT_TIMEOUT_S` (DNS failure included). Asked once."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=CONNECT_TIMEOUT_S):
            return True
    except OSError:
        return False


@contextmanager
def cache_only_when_unreachable() -> Iterator[bool]:
    """Inside: hub libraries read only the local cache when the hub is unreachable (what
    ``HF_HUB_OFFLINE=1`` does, set for this block only), so that a file missing from the cache
    fails at once instead of after retries. Yields whether the hub is reachable."""
    reachable = hub_reachable()
    if reachable:
        yield True
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield False
    finally:
        constants.HF_HUB_OFFLINE = before


def is_hub_failure(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) says a hub file could not be had: no
    connection, offline mode, not in the cache, a gated or missing repository."""
    from huggingface_hub import errors

    kinds = (
        errors.LocalEntryNotFoundError,
        errors.OfflineModeIsEnabled,
        errors.RepositoryNotFoundError,
        errors.GatedRepoError,
        errors.EntryNotFoundError,
        errors.RevisionNotFoundError,
        errors.HfHubHTTPError,
        ConnectionError,
        TimeoutError,
    )
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, kinds):
            return True
        text = str(exc)
        # transformers and diffusers re-raise as OSError with these words.
        if isinstance(exc, OSError) and (
            "huggingface.co" in text or "cached files" in text or "offline mode" in text
        ):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def missing_architecture(model_id: str, where: str, reachable: bool, exc: BaseException) -> str:
    """The message for a hub model whose architecture could not be read: which file, from
    where, and the three ways to supply it."""
    why = "the Hugging Face hub is unreachable" if not reachable else "the hub refused it"
    if not reachable:
        from huggingface_hub import constants

        why += f" ({'HF_HUB_OFFLINE is set' if constants.is_offline_mode() else 'no connection'})"
    return (
        f"{where}: {MODEL_FIELD} '{model_id}': the pre-flight check needs the architecture config "
        f"of this model (its config.json, or transformer/config.json for a diffusion pipeline), "
        f"and {why} and the local Hugging Face cache does not hold it ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}). Supply it in one of three ways: "
        f"(1) copy the model's config files to {ARCHITECTURES / model_id}/ (same layout as its "
        "hub repository; no weights needed); (2) point HF_HOME at a Hugging Face cache that holds "
        "the model (e.g. one filled by `huggingface-cli download` on a connected machine) and "
        f"set HF_HUB_OFFLINE=1; (3) set {MODEL_FIELD} to a local folder with the model"
    )

"""Hugging Face Hub ids (`google/t5-v1_1-base`) → a local checkpoint folder, through huggingface_hub's cache.

Resolution order, as `transformers.from_pretrained` does it: an existing local folder wins; a name with an
organisation (`org/name`) is a hub id, looked up in the cache (`$HF_HUB_CACHE`, default `$HF_HOME/hub`) and
downloaded only when the hub may be reached (not with `HF_HUB_OFFLINE=1`); anything else (a bare shape name
such as `t5-efficient-tiny`) is not a hub id and stays a random initialisation for the caller to build.

Only what t5lab reads is fetched: config.json, the other small json files, spiece.model and the safetensors
weights; `pytorch_model.bin` only for repositories that publish no safetensors (older ones such as
google/t5-v1_1-*), and then it is read with `torch.load(weights_only=True)`, never unpickled freely.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from t5lab.errors import T5LabError

# What t5lab reads from a checkpoint repository (tf_model.h5 / flax_model.msgpack are never fetched).
HUB_FILES = ["config.json", "*.json", "*.safetensors", "spiece.model"]
LEGACY_WEIGHT_FILES = ["pytorch_model.bin", "pytorch_model*.bin", "pytorch_model.bin.index.json"]
# huggingface_hub's own rule for a model id with a namespace (validate_repo_id), anchored on one slash.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def is_hub_id(name: str) -> bool:
    """True for `org/name` spellings that are not an existing path (those are folders, and win)."""
    return bool(_HUB_ID.match(name)) and ".." not in name and "--" not in name and not Path(name).exists()


def hub_offline() -> bool:
    """`HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) as set now: huggingface_hub reads it once, at import."""
    from huggingface_hub import constants

    now = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    return constants.HF_HUB_OFFLINE or (now or "").strip().lower() in {"1", "on", "yes", "true"}


def hub_cache_dir() -> str:
    """The hub cache folder as the environment names it now (`HF_HUB_CACHE`, else `HF_HOME/hub`)."""
    from huggingface_hub import constants

    if "HF_HUB_CACHE" in os.environ:
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if "HF_HOME" in os.environ:
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return constants.HF_HUB_CACHE


def resolve_checkpoint(name_or_path: str | Path) -> Path | None:
    """The local folder `name_or_path` names: itself when it is a folder, the cached (or freshly downloaded)
    snapshot of a hub id, None for anything else (a shape name). A hub id that can be neither found in the
    cache nor downloaded is a one-line `T5LabError`."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if not is_hub_id(name):
        return None
    folder = _snapshot(name, HUB_FILES)
    if not any((folder / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
        folder = _snapshot(name, LEGACY_WEIGHT_FILES)
    return folder


def _snapshot(repo_id: str, patterns: list[str]) -> Path:
    try:
        import huggingface_hub
        from huggingface_hub.errors import (
            GatedRepoError,
            HFValidationError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )
    except ImportError:  # a runtime dependency; only a broken install lacks it
        raise T5LabError(f"{repo_id}: loading a hub id needs huggingface_hub (pip install huggingface_hub)") from None

    offline = hub_offline()
    try:
        return Path(huggingface_hub.snapshot_download(
            repo_id, allow_patterns=patterns, local_files_only=offline, cache_dir=hub_cache_dir()))
    except GatedRepoError:
        raise T5LabError(f"{repo_id}: gated on the Hugging Face Hub; accept its terms and log in (hf auth login)") from None
    except RepositoryNotFoundError:
        raise T5LabError(f"{repo_id}: no such local folder, and no such model on the Hugging Face Hub "
                         "(or it is private: log in with hf auth login)") from None
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub could not be reached"
        raise T5LabError(f"{repo_id}: no such local folder, not in the Hugging Face cache {hub_cache_dir()}, and "
                         f"{why}; download it once with network access or give a checkpoint folder") from None
    except HFValidationError as e:
        raise T5LabError(f"{repo_id}: not a valid Hugging Face Hub id ({e})") from None

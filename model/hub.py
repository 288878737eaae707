"""Resolve a model reference: a local file or folder, or a Hugging Face Hub repository.

Imports no torch, so the service resolves references the same way.
"""

from __future__ import annotations

import re
from pathlib import Path

# Hub ids are `name` or `owner/name`, optionally pinned with `@revision`.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?(@[\w./-]+)?$")
_FILE_SUFFIXES = (".pt", ".bin", ".safetensors", ".onnx", ".json")


class ModelNotFoundError(Exception):
    """A model reference that names neither a local path nor a reachable Hub repository."""


def resolve_model(reference: str | Path) -> Path:
    """Return the local path of `reference`, downloading a Hub repository into the Hub cache if needed.

    Only the files a wav2vec 2.0 checkpoint needs are fetched: the JSON settings and the
    safetensors weights, or the PyTorch `.bin` weights where a repository has no safetensors.
    """
    path = Path(reference).expanduser()
    if path.exists():
        return path
    text = str(reference)
    if not _REPO_ID.match(text) or text.endswith(_FILE_SUFFIXES):
        raise ModelNotFoundError(f"model '{text}' not found: no such file or folder")
    repo_id, _, revision = text.partition("@")
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=["*.json", "*.safetensors"]))
        if not any(folder.glob("*.safetensors")):
            folder = Path(
                snapshot_download(repo_id, revision=revision or None, allow_patterns=["*.json", "pytorch_model*.bin"])
            )
    except Exception as error:  # the Hub client raises many kinds (offline, HTTP, auth, bad id): all mean "not here"
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise ModelNotFoundError(
            f"model '{text}' is not a local path and could not be fetched from the Hugging Face Hub: {reason}"
        ) from None
    return folder

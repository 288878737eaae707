"""Model folders that ship (`python -m training package` writes them): the PyTorch checkpoint in
`checkpoint/`, its ONNX export in `onnx/`, the language model beam search uses with it in `lm.arpa`
(and in `lm.json` the weight and word bonus tuned for it, `{"alpha": 0.5, "beta": 1.0}`: they go
with that file, not with another LM), the words it
knows in `lexicon.txt` (one per line: beam search stays within them), the model card and provenance
beside them. Anything that takes a model takes such a folder whole:
the CLI and training load its checkpoint, the server runs its export with its LM. Imports no torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# The default model: spoken English digit strings, trained by training/recipes/digits-model.sh.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "digits"


def is_package(path: Path) -> bool:
    return path.is_dir() and (path / "onnx" / "model.onnx").is_file() and (path / "checkpoint").is_dir()


def package_checkpoint(path: Path) -> Path:
    """The checkpoint folder of a model folder that ships; any other path as it is."""
    return path / "checkpoint" if is_package(path) else path


def package_onnx(path: Path) -> Path:
    """The ONNX export of a model folder that ships; any other path as it is."""
    return path / "onnx" if is_package(path) else path


def package_lm(path: Path) -> Path | None:
    """The language model of a model folder that ships, if it has one."""
    lm = path / "lm.arpa"
    return lm if is_package(path) and lm.is_file() else None


def package_lexicon(path: Path) -> Path | None:
    """The lexicon of a model folder that ships, if it has one (`model.lexicon.read_lexicon` reads it)."""
    lexicon = path / "lexicon.txt"
    return lexicon if is_package(path) and lexicon.is_file() else None


def package_lm_weights(path: Path) -> tuple[float, float] | None:
    """(alpha, beta): the language model weight and word bonus a model folder that ships gives its
    lm.arpa (`lm.json`), if it gives them; ValueError saying what is wrong with an unreadable lm.json."""
    file = path / "lm.json"
    if not (is_package(path) and file.is_file()):
        return None
    try:
        weights = json.loads(file.read_text(encoding="utf-8"))
        alpha, beta = float(weights["alpha"]), float(weights["beta"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f'{file} should be {{"alpha": NUMBER, "beta": NUMBER}}: {error!r}') from None
    if not (math.isfinite(alpha) and math.isfinite(beta)):
        raise ValueError(f"{file}: alpha and beta must be finite numbers")
    return alpha, beta


def tuned_lm_weights(path: Path, lm: str | Path | None) -> tuple[float, float] | None:
    """The weights a model folder that ships gives `lm` (`package_lm_weights`) when `lm` is that
    folder's own lm.arpa, given or found; None for any other language model."""
    own = package_lm(path)
    if lm is None or own is None or Path(lm).expanduser().resolve() != own.resolve():
        return None
    return package_lm_weights(path)

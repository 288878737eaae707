"""`python -m training package`: a model folder that ships, with where it came from.

    OUT/checkpoint/      the PyTorch checkpoint (Hugging Face layout): the CLI and fine-tuning load it
    OUT/onnx/            its ONNX export: the server runs it
    OUT/lm.arpa          the language model beam search uses with it (optional)
    OUT/lm.json          the LM weight and word bonus tuned for lm.arpa, {"alpha": A, "beta": B} (optional)
    OUT/lexicon.txt      the words it knows, one per line: beam search stays within them (optional)
    OUT/provenance.json  commits (packaging's, each training start's), configuration, data manifests (hash,
                         size), commands, metrics, file sizes
    OUT/README.md        the model card: what it is for, how it was made, how well it does, its limits

`python -m service --model OUT` and `python -m model transcribe --model OUT` take the folder whole
(model/package.py reads it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import yaml
from safetensors import safe_open

from .manifest import read_manifest
from .metrics import percent
from .provenance import read_starts, source

CHECKPOINT_FILES = (
    "config.json",
    "model.safetensors",
    "vocab.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)


def package(
    out: Path,
    checkpoint: Path,
    onnx: Path,
    lm: Path | None,
    config: Path,
    manifests: dict[str, Path],
    results: dict[str, Path],
    commands: Path | None,
    card: Path,
    lexicon: tuple[str, ...] | None = None,
    lm_weights: tuple[float, float] | None = None,
) -> dict:
    """Write the folder `out` (replacing what it held); returns the provenance record. `lexicon`: the
    words to write to lexicon.txt (read before `out` is replaced, so it may come from there);
    `lm_weights`: (alpha, beta) for lm.json."""
    made_by = source(out)  # before `out` changes: the folder being written is no source of itself
    if out.exists():
        shutil.rmtree(out)
    (out / "checkpoint").mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, out / "checkpoint" / name)
    shutil.copytree(onnx, out / "onnx")
    if lm is not None:
        shutil.copy2(lm, out / "lm.arpa")
    if lm_weights is not None:
        alpha, beta = lm_weights
        (out / "lm.json").write_text(json.dumps({"alpha": alpha, "beta": beta}) + "\n", encoding="utf-8")
    if lexicon is not None:
        (out / "lexicon.txt").write_text("".join(word + "\n" for word in lexicon), encoding="utf-8")
    record = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **made_by,
        "config_file": config.as_posix(),
        "config": yaml.safe_load(config.read_text(encoding="utf-8")),
        # The settings the run used in the end: the config with the command line's overrides.
        "training_config": _json_or_none(checkpoint.parent / "training_config.json"),
        # The commit each start of the training run was at (None: a run from before runs recorded it).
        "training_sources": read_starts(checkpoint.parent),
        "data": {name: _describe(path) for name, path in manifests.items()},
        "commands": commands.read_text(encoding="utf-8").splitlines() if commands else [],
        "metrics": {name: json.loads(path.read_text(encoding="utf-8")) for name, path in results.items()},
        "parameters": _parameters(out / "checkpoint" / "model.safetensors"),
    }
    record["files"] = {
        path.relative_to(out).as_posix(): path.stat().st_size for path in sorted(out.rglob("*")) if path.is_file()
    }
    (out / "provenance.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(_card(card.read_text(encoding="utf-8"), record), encoding="utf-8")
    return record


def _describe(manifest: Path) -> dict:
    entries = read_manifest(manifest)
    return {
        "manifest": manifest.as_posix(),
        "sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "utterances": len(entries),
        "hours": round(sum(entry.duration for entry in entries) / 3600, 3),
    }


def _parameters(weights: Path) -> int:
    """The checkpoint's parameter count, read from its safetensors file (shapes only)."""
    with safe_open(weights, framework="np") as tensors:
        return sum(int(np.prod(tensors.get_slice(name).get_shape())) for name in tensors.keys())


def _json_or_none(path: Path):
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _card(template: str, record: dict) -> str:
    """The card's template with {results}, {data}, {commands}, {commit}, {created}, {size_mb} and {parameters_m}
    (millions, one decimal) filled in."""
    rows = ["| evaluation set | utterances | greedy WER | WER with the LM |", "|---|---:|---:|---:|"]
    for name, metrics in record["metrics"].items():
        beam = percent(metrics["beam"]["wer"]) if "beam" in metrics else "-"
        rows.append(f"| {name} | {metrics['utterances']} | {percent(metrics['greedy']['wer'])} | {beam} |")
    data = ["| manifest | utterances | hours |", "|---|---:|---:|"]
    data += [f"| {name} | {item['utterances']} | {item['hours']:.2f} |" for name, item in record["data"].items()]
    size = sum(record["files"].values()) / 1e6
    return template.format(
        results="\n".join(rows),
        data="\n".join(data),
        commit=record["commit"],
        created=record["created"],
        size_mb=f"{size:.1f}",
        parameters_m=f"{record['parameters'] / 1e6:.1f}",
        commands="\n".join(record["commands"]),
    )

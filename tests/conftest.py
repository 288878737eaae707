"""Shared fixtures: tiny random wav2vec 2.0 models built and saved offline by transformers,
and the real speech in ../shared/data."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the network

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
REALSPEECH = DATA / "realspeech"


def missing_data(*folders: str) -> str | None:
    """Why a test of the real speech in ../shared/data/<folder> cannot run (one line naming the folders
    that are not there), or None when all are. A clone of the repository alone has none of them."""
    missing = [f"../shared/data/{folder}" for folder in folders if not (DATA / folder).is_dir()]
    if not missing:
        return None
    named = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
    return f"needs {named} (real speech; CI has it)"


def needs_data(*folders: str) -> pytest.MarkDecorator:
    """Skips a test, saying why, unless ../shared/data/<folder> is there for each folder."""
    reason = missing_data(*folders)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


def require_data(*folders: str) -> None:
    """The same inside a fixture: every test that uses it is skipped, saying why."""
    reason = missing_data(*folders)
    if reason is not None:
        pytest.skip(reason)


# How long a command may run before a test calls it hung. No test measures time: this only keeps a
# hang from stalling the suite, and is far above what anything takes on a loaded two-core machine.
HANG_SECONDS = 3600

# A character vocabulary like facebook/wav2vec2-base-960h's.
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]

# Tiny versions of the two architecture families; the strides are the paper's, so real audio
# at 16 kHz gives one frame per 20 ms as with the full-size models.
FAMILIES = {
    "base": dict(
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        conv_bias=False,
        num_conv_pos_embeddings=16,
        return_attention_mask=False,
    ),
    "large": dict(
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        conv_bias=True,
        num_conv_pos_embeddings=15,
        return_attention_mask=True,
    ),
}


def tiny_hf_config(family: str, **overrides):
    from transformers import Wav2Vec2Config

    settings = {key: value for key, value in FAMILIES[family].items() if key != "return_attention_mask"}
    return Wav2Vec2Config(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        conv_dim=[16] * 7,
        num_conv_pos_embedding_groups=4,
        num_codevectors_per_group=8,
        num_codevector_groups=2,
        codevector_dim=16,
        proj_codevector_dim=12,
        **settings,
        **overrides,
    )


def save_tiny_hf_model(folder: Path, family: str, architecture: str = "Wav2Vec2ForCTC", seed: int = 0) -> Path:
    """Build a random tiny model with transformers and save it, with its processor, to `folder`."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(tiny_hf_config(family)).eval()
    if architecture == "Wav2Vec2ForCTC":
        # Sharper random logits, so greedy paths emit many different characters.
        with torch.no_grad():
            model.lm_head.weight.mul_(40.0)
    model.save_pretrained(folder)
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(VOCAB)}))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(folder / "vocab.json"))
    extractor = transformers.Wav2Vec2FeatureExtractor(
        sampling_rate=16000, do_normalize=True, return_attention_mask=FAMILIES[family]["return_attention_mask"]
    )
    transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", params=sorted(FAMILIES))
def family(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def hf_ctc_folder(tmp_path_factory, family) -> Path:
    return save_tiny_hf_model(tmp_path_factory.mktemp(f"hf-ctc-{family}"), family)


@pytest.fixture(scope="session")
def realspeech() -> list[dict[str, str]]:
    """Rows of the real-speech manifest: audio path, reference text, sample rate, ..."""
    require_data("realspeech")
    with open(REALSPEECH / "manifest.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    for row in rows:
        row["path"] = str(REALSPEECH / row["audio"])
    return rows


@pytest.fixture(scope="session")
def exported_folder(hf_ctc_folder, tmp_path_factory, family) -> Path:
    """The tiny model of `family` exported by `python -m export onnx` (fp32)."""
    import subprocess
    import sys

    require_data("realspeech")  # the export is verified on real speech
    out = tmp_path_factory.mktemp(f"onnx-{family}") / "fp32"
    speech = [
        str(REALSPEECH / "audio" / "pocketsphinx" / "test" / "data" / "librivox" / name)
        for name in ("sense_and_sensibility_01_austen_64kb-0870.wav", "sense_and_sensibility_01_austen_64kb-0880.wav")
    ]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "export",
            "onnx",
            "--model",
            str(hf_ctc_folder),
            "--out",
            str(out),
            "--verify-audio",
            *speech,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fp32 overall" in result.stdout
    return out


def infer_all_at_once(batcher, utterances: list) -> list:
    """Every utterance as its own request to a started `service.batching.Batcher`, all at once; each
    request's results, in order. The batcher is stopped afterwards."""

    async def all_at_once():
        return await asyncio.gather(*(batcher.infer([samples]) for samples in utterances))

    try:
        return asyncio.run(all_at_once())
    finally:
        batcher.stop()


def write_arpa(sentences: list[str], path: Path) -> Path:
    """A bigram ARPA model with absolute discounting and proper back-off weights, for tests.

    Tokens are the sentence's words; <s> and </s> mark its ends.
    """
    import math
    from collections import Counter

    unigrams, bigrams = Counter(), Counter()
    for sentence in sentences:
        words = ["<s>", *sentence.split(), "</s>"]
        unigrams.update(words)
        bigrams.update(zip(words, words[1:]))
    total = sum(count for word, count in unigrams.items() if word != "<s>")
    unigram_p = {word: (unigrams[word] if word != "<s>" else 0) / total for word in unigrams}
    unigram_p["<unk>"] = 0.5 / total
    norm = sum(unigram_p.values())
    unigram_p = {word: p / norm for word, p in unigram_p.items()}
    discount = 0.5
    followers = Counter(first for first, _ in bigrams)
    lines = ["\\data\\", f"ngram 1={len(unigram_p)}", f"ngram 2={len(bigrams)}", "", "\\1-grams:"]
    for word, p in sorted(unigram_p.items()):
        if word in followers:
            left = discount * followers[word] / unigrams[word]
            seen = sum(unigram_p[second] for (first, second) in bigrams if first == word)
            backoff = math.log10(left / max(1.0 - seen, 1e-9))
            lines.append(f"{math.log10(p) if p > 0 else -99:.6f}\t{word}\t{backoff:.6f}")
        else:
            lines.append(f"{math.log10(p) if p > 0 else -99:.6f}\t{word}")
    lines += ["", "\\2-grams:"]
    for (first, second), count in sorted(bigrams.items()):
        lines.append(f"{math.log10((count - discount) / unigrams[first]):.6f}\t{first} {second}")
    lines += ["", "\\end\\", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def normalised_words(text: str) -> str:
    """Upper case, letters and apostrophes only, single spaces: the tiny models' alphabet."""
    import re

    return " ".join(re.sub(r"[^A-Z' ]", " ", text.upper()).split())


class RunningServer:
    def __init__(self, url: str, process, log: Path):
        self.url, self.process, self.log = url, process, log

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def run_server(model: Path | None, *options: str, log_dir: Path, env: dict | None = None, wait_ready: bool = True):
    """`python -m service` on a free loopback port, for real; stopped (SIGTERM) afterwards. With `model`
    None, no --model is given: the server's default.

    Waits for the server's own readiness signal (/ready answers 200), however long loading takes
    (a checkpoint may be exported first): it fails when the server exits or says loading failed,
    never on a clock (HANG_SECONDS only guards against a hang)."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = log_dir / f"server-{port}.log"
    with open(log, "wb") as output:
        chosen = [] if model is None else ["--model", str(model)]
        process = subprocess.Popen(
            [sys.executable, "-m", "service", *chosen, "--port", str(port), *options],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
    server = RunningServer(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + HANG_SECONDS
        while wait_ready:
            if process.poll() is not None:
                raise AssertionError(f"the server exited with {process.returncode}:\n{server.log_tail()}")
            try:
                ready = httpx.get(f"{server.url}/ready", timeout=HANG_SECONDS)
                if ready.status_code == 200:
                    break
                if "could not be loaded" in ready.json().get("detail", ""):
                    raise AssertionError(f"the server could not load its model:\n{server.log_tail()}")
            except httpx.TransportError:  # not listening yet (it may be exporting the model first)
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the server hung while getting ready:\n{server.log_tail()}")
            time.sleep(0.2)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=HANG_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def lm(tmp_path_factory, realspeech) -> Path:
    """A bigram language model (ARPA) of the real-speech references, for beam search."""
    sentences = [normalised_words(row["text"]) for row in realspeech]
    return write_arpa(sentences, tmp_path_factory.mktemp("lm") / "bigram.arpa")


def metric(server, name: str, **labels) -> float:
    """The sum of the Prometheus series `name` with these labels (whatever their others, e.g. the
    model), 0 when there is none."""
    import httpx

    return metric_in(httpx.get(server.url + "/metrics").text, name, **labels)


def metric_in(exposition: str, name: str, **labels) -> float:
    """`metric`, read from the text of a /metrics answer already fetched."""
    total = 0.0
    for line in exposition.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] == name and all(f'{key}="{wanted}"' in series for key, wanted in labels.items()):
            total += float(value)
    return total

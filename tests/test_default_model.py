"""The model that ships (models/digits): served by default, recognising real speech through the whole
chain — our training, our export, our server — the same through the server, the CLI and evaluation,
and saying so (a low confidence) when what it hears is not digits."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import websockets

from model.audio import load_audio
from model.ctc import normalize_text
from model.decoding import LM_BETA, MIN_CONFIDENCE
from model.package import DEFAULT_MODEL
from service.settings import Settings
from training.manifest import read_transcripts

from conftest import DATA, HANG_SECONDS, REALSPEECH, REPO, needs_data, run_server

FSDD = DATA / "fsdd"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
EXAMPLE = REPO / "examples" / "four-one-five-zero-two.wav"
OH = ("four one five oh two", "two oh four seven")


def word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """Word errors (edit distance) over reference words, for (reference, hypothesis) pairs."""
    errors = words = 0
    for reference, hypothesis in pairs:
        ref, hyp = reference.split(), hypothesis.split()
        distance = list(range(len(hyp) + 1))
        for i, word in enumerate(ref, start=1):
            previous, distance[0] = distance[0], i
            for j, other in enumerate(hyp, start=1):
                previous, distance[j] = (
                    distance[j],
                    min(distance[j] + 1, distance[j - 1] + 1, previous + (word != other)),
                )
        errors, words = errors + distance[-1], words + len(ref)
    return errors / words


@pytest.fixture(scope="module")
def default_server(tmp_path_factory):
    with run_server(None, log_dir=tmp_path_factory.mktemp("default-server")) as server:
        yield server


def test_the_shipped_model_folder_is_complete_and_small():
    files = {path.relative_to(DEFAULT_MODEL).as_posix() for path in DEFAULT_MODEL.rglob("*") if path.is_file()}
    assert {
        "onnx/model.onnx",
        "checkpoint/model.safetensors",
        "checkpoint/vocab.json",
        "lm.arpa",
        "README.md",
        "provenance.json",
    } <= files
    assert sum(path.stat().st_size for path in DEFAULT_MODEL.rglob("*") if path.is_file()) <= 25e6
    assert (DEFAULT_MODEL / "lexicon.txt").read_text().split() == [*DIGITS, "oh"]
    provenance = json.loads((DEFAULT_MODEL / "provenance.json").read_text())
    assert provenance["commit"] != "unknown" and provenance["commands"]
    assert all(len(item["sha256"]) == 64 for item in provenance["data"].values())
    vocab = json.loads((DEFAULT_MODEL / "checkpoint" / "vocab.json").read_text())
    assert set("abcdefghijklmnopqrstuvwxyz'") <= set(vocab), "a standard English character vocabulary"
    (served,) = Settings().models
    assert served.lm == DEFAULT_MODEL / "lm.arpa" and served.name == "digits"
    assert served.lexicon == DEFAULT_MODEL / "lexicon.txt"
    assert (served.lm_alpha, served.lm_beta) == (0.2, 6.0), "the weights tuned on speakers left out (lm.json)"


@needs_data("fsdd")
def test_the_server_recognises_real_spoken_digits_by_default(default_server):
    """All 300 recordings of FSDD's official test split (never trained on), through POST /transcribe."""
    assert httpx.get(default_server.url + "/v1/models").json()["data"][0]["id"] == "digits"
    test = read_transcripts(FSDD / "transcripts_test.tsv")

    def transcribe(path):
        with open(path, "rb") as audio:
            response = httpx.post(default_server.url + "/transcribe", files={"file": (path.name, audio)}, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(transcribe, test))
    assert {result["model"] for result in results} == {"digits"}
    assert {result["decoder"] for result in results} == {"beam"}, "the shipped LM turns beam search on"
    wer = word_error_rate([(reference, result["text"]) for reference, result in zip(test.values(), results)])
    assert wer <= 0.01, f"WER {wer:.2%} on FSDD's test split"
    right = [result for reference, result in zip(test.values(), results) if result["text"] == reference]
    rejected = np.mean([result["confidence"] < MIN_CONFIDENCE for result in right])
    assert rejected <= 0.02, f"{rejected:.1%} of the right transcripts are below the default min_confidence"


@needs_data("realspeech", "digits-multi")
def test_the_server_says_so_when_it_hears_no_digits(default_server):
    """English sentences (realspeech's 68 recordings that are not digit strings), music-like tones and
    noise come out empty or below the default min_confidence (their weakest word marked low_confidence),
    while real digit strings (digits-multi) that come out right stay above it. The shipped model: 62 of
    the 68 sentences (README, the default model's table)."""

    def transcribe(path, **fields):
        with open(path, "rb") as audio:
            response = httpx.post(
                default_server.url + "/transcribe", files={"file": (path.name, audio)}, data=fields, timeout=60
            )
        assert response.status_code == 200, response.text
        return response.json()

    def heard_nothing(result) -> bool:
        marked = [word["low_confidence"] for word in result["words"]]
        assert any(marked) == (result["confidence"] < MIN_CONFIDENCE) or not marked
        return result["text"] == "" or result["confidence"] < MIN_CONFIDENCE

    # Recordings whose reference is only digit words ("five five") are digit strings, not English sentences.
    sentences = [
        path
        for path, text in read_transcripts(REALSPEECH / "manifest.tsv").items()
        if not set(normalize_text(text).split()) <= {*DIGITS, "oh"}
    ]
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda path: transcribe(
                    path, **({"sample_rate": 16000, "encoding": "pcm_s16le"} if path.suffix == ".raw" else {})
                ),
                sentences,
            )
        )
    said_so = np.mean([heard_nothing(result) for result in results])
    assert len(results) == 68 and said_so >= 0.9, f"only {said_so:.0%} of the English sentences"

    rate, generator = 16000, np.random.default_rng(0)
    time = np.arange(3 * rate) / rate
    melody = np.sin(2 * np.pi * np.repeat(220 * 2 ** (generator.integers(0, 24, 12) / 12), rate // 4) * time)
    chords = sum(np.sin(2 * np.pi * 261.6 * ratio * time) for ratio in (1, 1.25, 1.5))
    for name, samples in (("noise", generator.normal(0, 0.1, 3 * rate)), ("melody", melody), ("chords", chords)):
        pcm = (np.clip(samples / np.abs(samples).max() * 0.5, -1, 1) * 32767).astype("<i2")
        response = httpx.post(
            default_server.url + "/transcribe?sample_rate=16000&encoding=pcm_s16le",
            content=pcm.tobytes(),
            headers={"content-type": "application/octet-stream"},
        )
        assert heard_nothing(response.json()), (name, response.json()["text"])

    strings = read_transcripts(DATA / "digits-multi" / "manifest.tsv")
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(transcribe, strings))
    right = [
        result for reference, result in zip(strings.values(), results) if result["text"] == normalize_text(reference)
    ]
    rejected = np.mean([result["confidence"] < MIN_CONFIDENCE for result in right])
    assert len(right) >= 0.7 * len(strings) and rejected <= 0.05, f"{rejected:.1%} of right digit strings rejected"


def test_the_shipped_example_transcribes_and_streams_alike(default_server):
    with open(EXAMPLE, "rb") as audio:
        response = httpx.post(default_server.url + "/transcribe", files={"file": (EXAMPLE.name, audio)})
    assert response.status_code == 200 and response.json()["text"] == "four one five zero two", response.text
    samples = load_audio(EXAMPLE, 16000)
    finals = asyncio.run(_stream_finals(default_server.url, samples))
    assert " ".join(final["text"] for final in finals if final["text"]) == "four one five zero two"


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="Festival is not installed (.ci/run installs it)")
@pytest.mark.parametrize("text", OH)
def test_the_shipped_model_recognises_oh_for_zero(default_server, tmp_path, text):
    for voice in ("cmu_us_slt_arctic_hts", "kal_diphone"):
        (tmp_path / "text.txt").write_text(text + "\n")
        raw = tmp_path / f"{voice}.wav"
        subprocess.run(
            ["text2wave", "-eval", f"(voice_{voice})", "-o", str(raw), str(tmp_path / "text.txt")],
            check=True,
            capture_output=True,
        )
        with open(raw, "rb") as audio:
            response = httpx.post(default_server.url + "/transcribe", files={"file": (raw.name, audio)})
        assert response.json()["text"] == text, (voice, response.text)


async def _stream_finals(url: str, samples: np.ndarray) -> list[dict]:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    async with websockets.connect(url.replace("http", "ws") + "/v1/stream") as socket:
        await socket.send(json.dumps({"sample_rate": 16000, "encoding": "pcm_s16le", "endpointing": False}))
        for start in range(0, len(pcm), 1600):
            await socket.send(pcm[start : start + 1600].tobytes())
        await socket.send(json.dumps({"type": "eof"}))
        return [message for message in map(json.loads, [text async for text in socket]) if message["type"] == "final"]


@needs_data("fsdd", "digits-multi", "realspeech")
def test_the_cli_evaluation_and_the_server_give_the_same_transcripts(default_server, tmp_path):
    """The checkpoint through `python -m model transcribe` and `python -m training evaluate` and its ONNX
    export through the server, each with its defaults (beam search with the folder's LM, within its
    lexicon), and greedy (--no-lm), on real recordings: 8 kHz FSDD, 16 kHz digit strings of other
    speakers and microphones, and English."""
    paths = (
        sorted((FSDD / "recordings").glob("[0-9]_*_[0-4].wav"))[::10]
        + [EXAMPLE]
        + sorted((DATA / "digits-multi" / "an4").rglob("*.flac"))[:8]
        + [
            REALSPEECH
            / "audio"
            / "pocketsphinx"
            / "test"
            / "data"
            / "librivox"
            / "sense_and_sensibility_01_austen_64kb-0880.wav"
        ]
    )
    cli = {}
    for decoder, flags in (("beam", []), ("greedy", ["--no-lm"])):
        result = subprocess.run(
            [sys.executable, "-m", "model", "transcribe", "--json", "--word-timestamps", *flags, *map(str, paths)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert result.returncode == 0, result.stderr
        cli[decoder] = [json.loads(line) for line in result.stdout.splitlines()]
        assert {item["decoder"] for item in cli[decoder]} == {decoder}
    assert any(item["words"] and item["confidence"] < MIN_CONFIDENCE for item in cli["beam"]), "the English one"

    manifest, details = tmp_path / "audio.jsonl", tmp_path / "details.jsonl"
    manifest.write_text(
        "".join(json.dumps({"audio": str(path), "duration": 1.0, "text": "any"}) + "\n" for path in paths)
    )
    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "evaluate",
            "--model",
            str(DEFAULT_MODEL),
            "--manifest",
            str(manifest),
            "--details",
            str(details),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    rows = [json.loads(line) for line in details.read_text().splitlines()]
    for decoder in ("beam", "greedy"):
        assert [row[decoder] for row in rows] == [item["text"] for item in cli[decoder]], decoder
        assert [row[f"{decoder}_confidence"] for row in rows] == pytest.approx(
            [item["confidence"] for item in cli[decoder]], abs=1e-3
        )

    for decoder, query in (("beam", ""), ("greedy", "?decoder=greedy")):
        for path, item in zip(paths, cli[decoder]):
            with open(path, "rb") as audio:
                served = httpx.post(
                    default_server.url + "/transcribe" + query, files={"file": (path.name, audio)}
                ).json()
            assert served["decoder"] == decoder and served["text"] == item["text"], (decoder, path.name)
            assert [(w["word"], w["start"], w["end"], w["low_confidence"]) for w in served["words"]] == [
                (w["word"], w["start"], w["end"], w["low_confidence"]) for w in item["words"]
            ], (decoder, path.name)
            assert served["confidence"] == pytest.approx(item["confidence"], abs=1e-3)


def test_a_model_folders_lm_weights_come_with_its_lm(tmp_path):
    """lm.json beside a folder's lm.arpa sets the LM weights the CLI, evaluation, pseudo-labelling
    and the server decode with it (a word penalty that leaves one word of the example's five,
    here); flags override them, and another LM does not take them. An unreadable lm.json is refused, saying so."""
    folder = tmp_path / "digits"
    shutil.copytree(DEFAULT_MODEL, folder)
    (folder / "lm.json").write_text(json.dumps({"alpha": 0.5, "beta": -40}))

    def cli(*flags: str) -> str:
        command = [sys.executable, "-m", "model", "transcribe", "--model", str(folder), *flags, str(EXAMPLE)]
        result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=HANG_SECONDS)
        assert result.returncode == 0, result.stderr
        return result.stdout.split("\t")[1].strip()

    assert cli() == cli("--lm", str(folder / "lm.arpa")) == "four"
    other = shutil.copy(folder / "lm.arpa", tmp_path / "other.arpa")  # the same n-grams, not the same file
    assert cli("--lm-beta", "1") == cli("--lm", str(other)) == "four one five zero two"
    manifest, details = tmp_path / "audio.jsonl", tmp_path / "details.jsonl"
    manifest.write_text(json.dumps({"audio": str(EXAMPLE), "duration": 1.0, "text": "four one five zero two"}) + "\n")
    command = ["--model", str(folder), "--manifest", str(manifest), "--details", str(details)]
    evaluated = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", *command], capture_output=True, text=True, cwd=REPO
    )
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(details.read_text())["beam"] == "four"

    def pseudo_label(lm) -> str:
        scores = tmp_path / f"scores-{lm.name}.jsonl"
        command = ["--model", str(folder), "--manifest", str(manifest), "--lm", str(lm), "--min-confidence", "0"]
        labelled = subprocess.run(
            [sys.executable, "-m", "training", "pseudo-label", *command, "--out", str(tmp_path / "out.jsonl")]
            + ["--scores-out", str(scores)],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert labelled.returncode == 0, labelled.stderr
        return json.loads(scores.read_text())["text"]

    assert pseudo_label(folder / "lm.arpa") == "four"
    assert pseudo_label(other) == "four one five zero two"
    with run_server(folder, log_dir=tmp_path) as server:
        with open(EXAMPLE, "rb") as audio:
            assert httpx.post(server.url + "/transcribe", files={"file": audio}).json()["text"] == "four"
    (served,) = Settings(model=[str(folder)], lm=[str(folder / "lm.arpa")]).models
    (beside_another,) = Settings(model=[str(folder)], lm=[str(other)]).models
    assert (served.lm_alpha, served.lm_beta, beside_another.lm_beta) == (0.5, -40, LM_BETA)

    (folder / "lm.json").write_text('{"alpha": 0.5}')
    refused = subprocess.run(
        [sys.executable, "-m", "model", "transcribe", "--model", str(folder), str(EXAMPLE)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
    )
    assert refused.returncode != 0 and "lm.json" in refused.stderr and "Traceback" not in refused.stderr
    with pytest.raises(ValueError, match="lm.json"):
        Settings(model=[str(folder)])

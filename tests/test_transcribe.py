"""One recognizer for every caller: the same audio through `python -m model transcribe`, `python -m
training evaluate` and the server gives identical text and word times, greedy and with beam search
over a language model, for a short recording and a 3-minute one (transcribed in windows)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile

from model.audio import load_audio

from conftest import DATA, HANG_SECONDS, REALSPEECH, REPO, require_data, run_server

SHORT = (
    REALSPEECH
    / "audio"
    / "pocketsphinx"
    / "test"
    / "data"
    / "librivox"
    / "sense_and_sensibility_01_austen_64kb-0870.wav"
)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> list[Path]:
    """A 7 s recording, and 3 minutes of read speech (LibriSpeech utterances end to end)."""
    require_data("realspeech", "unlabeled-librispeech")
    pieces, total = [], 0
    for path in sorted((DATA / "unlabeled-librispeech").glob("*.flac")):
        pieces.append(load_audio(path, 16000))
        total += len(pieces[-1])
        if total >= 180 * 16000:
            break
    long = tmp_path_factory.mktemp("long") / "three-minutes.wav"
    soundfile.write(long, np.concatenate(pieces)[: 180 * 16000], 16000, subtype="PCM_16")
    return [SHORT, long]


def cli(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "model", "transcribe", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
    )
    assert result.returncode == 0, result.stderr
    return result


def words_and_times(words: list[dict]) -> list[tuple[str, float, float]]:
    return [(word["word"], word["start"], word["end"]) for word in words]


def test_cli_evaluate_and_server_agree(exported_folder, family, lm, recordings, tmp_path):
    if family != "base":
        pytest.skip("one family is enough: every caller runs the same code for both")
    paths = [str(path) for path in recordings]
    by_cli = {
        decoder: [
            json.loads(line)
            for line in cli(
                "--model", str(exported_folder), "--json", "--word-timestamps", *extra, *paths
            ).stdout.splitlines()
        ]
        for decoder, extra in (("greedy", []), ("beam", ["--lm", str(lm), "--beam-width", "16"]))
    }
    for decoder, results in by_cli.items():
        assert [result["audio"] for result in results] == paths
        assert all(result["decoder"] == decoder for result in results)
    assert by_cli["greedy"][1]["duration"] == 180.0
    assert by_cli["greedy"][1]["words"][-1]["end"] > 170, "word times run on across windows to the end"

    manifest, details = tmp_path / "audio.jsonl", tmp_path / "details.jsonl"
    manifest.write_text(
        "".join(json.dumps({"audio": path, "duration": 1.0, "text": "any reference"}) + "\n" for path in paths)
    )
    evaluated = subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "evaluate",
            "--model",
            str(exported_folder),
            "--manifest",
            str(manifest),
            "--lm",
            str(lm),
            "--beam-width",
            "16",
            "--details",
            str(details),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    rows = [json.loads(line) for line in details.read_text().splitlines()]
    for decoder in ("greedy", "beam"):
        assert [row[decoder] for row in rows] == [result["text"] for result in by_cli[decoder]]

    # A beam search may take its time here: only the results are compared.
    with run_server(
        exported_folder,
        "--lm",
        str(lm),
        "--beam-width",
        "16",
        "--decode-timeout-seconds",
        str(HANG_SECONDS),
        log_dir=tmp_path,
    ) as server:
        for decoder, results in by_cli.items():
            for path, result in zip(paths, results):
                with open(path, "rb") as handle:
                    response = httpx.post(
                        f"{server.url}/transcribe?decoder={decoder}", files={"file": handle}, timeout=HANG_SECONDS
                    )
                assert response.status_code == 200, response.text
                served = response.json()
                assert served["text"] == result["text"], (decoder, path)
                assert words_and_times(served["words"]) == words_and_times(result["words"]), (decoder, path)
                confidences = [word["confidence"] for word in served["words"]]
                assert confidences == pytest.approx([word["confidence"] for word in result["words"]], abs=1e-3)


def test_word_timestamps_as_text(exported_folder):
    """Without --json, each transcript line is followed by one line per word."""
    (result,) = [
        json.loads(line)
        for line in cli("--model", str(exported_folder), "--json", "--word-timestamps", str(SHORT)).stdout.splitlines()
    ]
    lines = cli("--model", str(exported_folder), "--word-timestamps", str(SHORT)).stdout.splitlines()
    assert lines[0] == f"{SHORT}\t{result['text']}"
    assert len(lines) == 1 + len(result["words"]) > 1
    for line, word in zip(lines[1:], result["words"]):
        assert line == f"\t{word['start']:.3f}\t{word['end']:.3f}\t{word['word']}\t{word['confidence']:.4f}"
    plain = cli("--model", str(exported_folder), str(SHORT)).stdout
    assert plain == f"{SHORT}\t{result['text']}\n"


def test_exported_models_transcribe_without_torch(exported_folder):
    script = (
        "import sys; from model.__main__ import main; "
        f"code = main(['transcribe', '--model', {str(exported_folder)!r}, {str(SHORT)!r}]); "
        "print(code, 'torch' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=HANG_SECONDS
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "0 False"

"""`python -m model transcribe` on real speech, against transformers' greedy output, and its errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from model.audio import load_audio

from conftest import DATA, REPO, require_data, save_tiny_hf_model


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "model", *args], capture_output=True, text=True, cwd=REPO, **kwargs)


def hf_greedy_text(folder, path: str) -> str:
    """Reference: transformers' processor and model on the samples our audio path decodes."""
    processor = transformers.Wav2Vec2Processor.from_pretrained(folder)
    model = transformers.Wav2Vec2ForCTC.from_pretrained(folder).eval()
    inputs = processor(load_audio(path, 16000), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        text = processor.batch_decode(model(inputs.input_values).logits.argmax(-1))[0]
    return " ".join(text.split())  # transcripts are single-spaced; batch_decode keeps runs of spaces


@pytest.fixture(scope="module")
def audio_files(realspeech) -> list[str]:
    """Real speech in each format and several sample rates."""
    require_data("unlabeled-librispeech")
    chosen = {}
    for row in realspeech:
        kind = (row["path"].rsplit(".", 1)[-1], row["sample_rate"])
        if kind[0] in ("wav", "mp3"):
            chosen.setdefault(kind, row["path"])
    chosen["flac"] = str(sorted((DATA / "unlabeled-librispeech").glob("*.flac"))[1])
    return list(chosen.values())


def test_transcripts_equal_transformers_greedy_output(hf_ctc_folder, audio_files):
    result = run("transcribe", "--model", str(hf_ctc_folder), *audio_files)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == audio_files
    for line, path in zip(lines, audio_files):
        text = line.split("\t", 1)[1]
        assert text == hf_greedy_text(hf_ctc_folder, path), path
    assert sum(len(line.split("\t", 1)[1]) > 0 for line in lines) >= len(lines) - 1


def test_missing_model_is_one_line_error(tmp_path, audio_files):
    result = run("transcribe", "--model", str(tmp_path / "nothing-here"), audio_files[0])
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "nothing-here" in result.stderr and "not found" in result.stderr

    result = run(
        "transcribe",
        "--model",
        "facebook/wav2vec2-base-960h",
        audio_files[0],
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "'facebook/wav2vec2-base-960h'" in result.stderr


def test_unreadable_audio_is_reported_and_the_rest_transcribed(hf_ctc_folder, audio_files, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt not really")
    result = run("transcribe", "--model", str(hf_ctc_folder), audio_files[0], str(broken), str(tmp_path / "none.wav"))
    assert result.returncode == 1
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == [audio_files[0]]
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert "could not decode" in errors[0] and "broken.wav" in errors[0]
    assert "no such audio file" in errors[1]


def test_too_short_audio_is_refused(hf_ctc_folder, tmp_path):
    import soundfile

    soundfile.write(tmp_path / "click.wav", np.full(160, 0.1, dtype=np.float32), 16000)
    result = run("transcribe", "--model", str(hf_ctc_folder), str(tmp_path / "click.wav"))
    assert result.returncode == 1
    assert "0.010 s long; at least 0.025 s is needed" in result.stderr


def test_pretraining_checkpoint_cannot_transcribe(tmp_path, audio_files):
    folder = save_tiny_hf_model(tmp_path, "base", architecture="Wav2Vec2ForPreTraining")
    result = run("transcribe", "--model", str(folder), audio_files[0])
    assert result.returncode == 1
    assert "has no CTC head" in result.stderr


def test_convert_writes_a_folder_that_transcribes_alike(hf_ctc_folder, audio_files, tmp_path):
    result = run("convert", "--model", str(hf_ctc_folder), "--out", str(tmp_path / "converted"))
    assert result.returncode == 0, result.stderr
    original = run("transcribe", "--model", str(hf_ctc_folder), *audio_files[:3])
    converted = run("transcribe", "--model", str(tmp_path / "converted"), *audio_files[:3])
    assert original.stdout == converted.stdout and original.stdout


def test_readme_transcribe_command(hf_ctc_folder, audio_files):
    """The README's first command, with a local model folder instead of a Hub id."""
    result = subprocess.run(
        ["make", "--no-print-directory", "transcribe", f"MODEL={hf_ctc_folder}", f"AUDIO={audio_files[0]}"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"{audio_files[0]}\t{hf_greedy_text(hf_ctc_folder, audio_files[0])}"


def test_service_side_modules_import_no_torch():
    script = "import sys, model.audio, model.ctc, model.config, model.hub; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"

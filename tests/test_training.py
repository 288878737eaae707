"""`python -m training`: manifests of real corpora, and WER/CER evaluation with the server's decoders."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from model.loading import load_recognizer
from model.transcribe import Transcriber
from training.manifest import Entry, read_manifest, write_manifest
from training.metrics import error_rates, normalize_text
from training.provenance import record_start

from conftest import DATA, HANG_SECONDS, REPO, needs_data, normalised_words, write_arpa


def training(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", *args], capture_output=True, text=True, cwd=REPO, timeout=HANG_SECONDS
    )


@needs_data("fsdd")
def test_manifest_of_a_transcribed_corpus(tmp_path):
    out = tmp_path / "fsdd-test.jsonl"
    result = training("manifest", "--transcripts", str(DATA / "fsdd" / "transcripts_test.tsv"), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "300 files (300 with text)" in result.stdout
    entries = read_manifest(out)
    assert len(entries) == 300 and all(entry.audio.is_file() for entry in entries)
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"audio", "duration", "text"}
    by_name = {entry.audio.name: entry for entry in entries}
    assert by_name["3_theo_0.wav"].text == "three"
    assert all(0.1 < entry.duration < 3.0 for entry in entries)  # isolated digits at 8 kHz


@needs_data("unlabeled-librispeech")
def test_manifest_of_a_folder_with_duration_limits(tmp_path):
    out = tmp_path / "corpus" / "unlabeled.jsonl"
    folder = DATA / "unlabeled-librispeech"
    result = training("manifest", "--audio-dir", str(folder), "--out", str(out), "--max-seconds", "15")
    assert result.returncode == 0, result.stderr
    entries = read_manifest(out)
    skipped = int(result.stdout.split("; ")[1].split()[0])
    assert len(entries) + skipped == len(list(folder.glob("*.flac"))) and skipped > 0
    assert all(entry.text is None and entry.duration <= 15 for entry in entries)


@needs_data("fsdd")
def test_manifest_paths_are_relative_inside_the_corpus(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "audio").mkdir(parents=True)
    source = DATA / "fsdd" / "recordings" / "7_lucas_3.wav"
    (corpus / "audio" / "a.wav").write_bytes(source.read_bytes())
    (corpus / "text.tsv").write_text("audio/a.wav\tseven\n")
    assert (
        training(
            "manifest",
            "--audio-dir",
            str(corpus / "audio"),
            "--transcripts",
            str(corpus / "text.tsv"),
            "--out",
            str(corpus / "m.jsonl"),
        ).returncode
        == 0
    )
    assert json.loads((corpus / "m.jsonl").read_text())["audio"] == "audio/a.wav"
    moved = tmp_path / "moved"
    corpus.rename(moved)
    (entry,) = read_manifest(moved / "m.jsonl")
    assert entry.audio.is_file() and entry.text == "seven"


def test_manifest_errors_are_one_line(tmp_path):
    result = training("manifest", "--out", str(tmp_path / "m.jsonl"))
    assert result.returncode == 1 and result.stderr.startswith("error: give --audio-dir")
    bad = tmp_path / "bad.tsv"
    bad.write_text("missing.wav\thello\n")
    result = training("manifest", "--transcripts", str(bad), "--out", str(tmp_path / "m.jsonl"))
    assert result.returncode == 1 and "missing.wav" in result.stderr and result.stderr.count("\n") == 1


def test_error_rates_normalise_both_sides():
    assert normalize_text("Hello, WORLD! It's -- 'fine'.") == "hello world it's fine"
    rates = error_rates(["HE WAS NOT ILL", "the cat"], ["he was not ill.", "the hat sat"])
    assert rates["words"] == 6 and rates["substitutions"] == 1 and rates["insertions"] == 1
    assert rates["wer"] == pytest.approx(2 / 6)
    assert rates["cer"] > 0


def test_evaluate_scores_a_model(hf_ctc_folder, family, realspeech, tmp_path):
    if family != "base":
        pytest.skip("scoring does not depend on the family")
    rows = [row for row in realspeech if row["audio"].endswith(".wav")][:3]
    transcriber = Transcriber(load_recognizer(hf_ctc_folder))
    transcripts = [transcriber.transcribe_file(row["path"]) for row in rows]
    own = [transcript.text for transcript in transcripts]
    exact, real = tmp_path / "exact.jsonl", tmp_path / "real.jsonl"
    exact.write_text(
        "".join(
            json.dumps({"audio": row["path"], "duration": 1.0, "text": text}) + "\n" for row, text in zip(rows, own)
        )
    )
    real.write_text(
        "".join(json.dumps({"audio": row["path"], "duration": 1.0, "text": row["text"]}) + "\n" for row in rows)
    )
    result = training("evaluate", "--model", str(hf_ctc_folder), "--manifest", str(exact), "--min-confidence", "0.9")
    assert result.returncode == 0, result.stderr
    greedy = json.loads(result.stdout)["greedy"]
    assert greedy["wer"] == 0.0  # the model's own output as the reference
    below = np.mean([transcript.confidence < 0.9 for transcript in transcripts])  # every one of them correct
    assert greedy["low_confidence"] == {"min_confidence": 0.9, "all": round(below, 4), "correct": round(below, 4)}

    lm = write_arpa([normalised_words(row["text"]) for row in rows], tmp_path / "lm.arpa")
    details = tmp_path / "details.jsonl"
    result = training(
        "evaluate",
        "--model",
        str(hf_ctc_folder),
        "--manifest",
        str(real),
        "--lm",
        str(lm),
        "--beam-width",
        "16",
        "--details",
        str(details),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["utterances"] == 3 and report["greedy"]["wer"] > 0.5  # random weights
    assert 0 <= report["beam"]["cer"] and report["beam"]["words"] == report["greedy"]["words"]
    lines = [json.loads(line) for line in details.read_text().splitlines()]
    assert [line["greedy"] for line in lines] == own and all("beam" in line for line in lines)
    assert [line["greedy_confidence"] for line in lines] == [round(t.confidence, 4) for t in transcripts]


@needs_data("fsdd")
def test_manifest_carves_dev_sets_subsets_and_speakers(tmp_path):
    tables = ["--transcripts", str(DATA / "fsdd" / "transcripts_train.tsv")]
    result = training(
        "manifest",
        *tables,
        "--out",
        str(tmp_path / "train.jsonl"),
        "--dev-out",
        str(tmp_path / "dev.jsonl"),
        "--dev-match",
        r"_5\.wav$",
    )
    assert result.returncode == 0, result.stderr
    train, dev = read_manifest(tmp_path / "train.jsonl"), read_manifest(tmp_path / "dev.jsonl")
    assert (len(train), len(dev)) == (2640, 60)
    assert all(entry.audio.name.endswith("_5.wav") for entry in dev)
    assert not {entry.audio for entry in train} & {entry.audio for entry in dev}

    result = training(
        "manifest",
        *tables,
        "--exclude",
        r"_5\.wav$",
        "--count",
        "270",
        "--seed",
        "3",
        "--out",
        str(tmp_path / "few.jsonl"),
        "--rest-out",
        str(tmp_path / "rest.jsonl"),
    )
    assert result.returncode == 0, result.stderr
    few, rest = read_manifest(tmp_path / "few.jsonl"), read_manifest(tmp_path / "rest.jsonl")
    assert (len(few), len(rest)) == (270, 2370)
    counts = {text: sum(entry.text == text for entry in few) for text in {entry.text for entry in few}}
    assert len(counts) == 10 and set(counts.values()) == {27}, counts  # every digit keeps its share

    random_dev = training(
        "manifest",
        *tables,
        "--include",
        "_theo_",
        "--out",
        str(tmp_path / "theo.jsonl"),
        "--dev-out",
        str(tmp_path / "theo-dev.jsonl"),
        "--dev-fraction",
        "0.1",
    )
    assert random_dev.returncode == 0, random_dev.stderr
    theo, theo_dev = read_manifest(tmp_path / "theo.jsonl"), read_manifest(tmp_path / "theo-dev.jsonl")
    assert (len(theo), len(theo_dev)) == (405, 45)
    assert all("_theo_" in entry.audio.name for entry in theo + theo_dev)

    both = training(
        "manifest",
        *tables,
        "--transcripts",
        str(DATA / "fsdd" / "transcripts_test.tsv"),
        "--exclude",
        "_theo_",
        "--out",
        str(tmp_path / "others.jsonl"),
    )
    assert both.returncode == 0 and len(read_manifest(tmp_path / "others.jsonl")) == 2500


@needs_data("fsdd")
def test_manifest_split_errors_are_one_line(tmp_path):
    tables = ["--transcripts", str(DATA / "fsdd" / "transcripts_test.tsv"), "--out", str(tmp_path / "m.jsonl")]
    for extra, message in (
        (["--dev-out", str(tmp_path / "d.jsonl")], "--dev-match or --dev-fraction"),
        (["--fraction", "1.5"], "--fraction is a fraction"),
        (["--rest-out", str(tmp_path / "r.jsonl")], "--rest-out goes with"),
        (["--include", "no-such-speaker"], "no files left"),
    ):
        result = training("manifest", *tables, *extra)
        assert result.returncode == 1 and message in result.stderr and result.stderr.count("\n") == 1, result.stderr


@needs_data("fsdd")
def test_lm_command_writes_a_bigram_model_kenlm_reads(tmp_path):
    import kenlm

    manifest = tmp_path / "digits.jsonl"
    result = training("manifest", "--transcripts", str(DATA / "fsdd" / "transcripts_test.tsv"), "--out", str(manifest))
    assert result.returncode == 0
    result = training("lm", "--manifest", str(manifest), "--out", str(tmp_path / "words.arpa"))
    assert result.returncode == 0, result.stderr
    assert "10 distinct words" in result.stdout
    model = kenlm.Model(str(tmp_path / "words.arpa"))
    assert model.order == 2
    assert model.score("seven", bos=True, eos=True) > model.score("hello", bos=True, eos=True)


def test_batches_hold_every_utterance_once_per_epoch_within_their_limits():
    import numpy as np

    from training.batches import BatchStream, make_batches

    durations = list(np.random.default_rng(0).uniform(0.2, 3.0, 500))
    padding = {}
    for by_length, pool in ((True, 0), (False, 0), (False, 128)):
        batches = make_batches(
            durations, 20.0, seed=1, epoch=0, max_utterances=16, by_length=by_length, length_pool=pool
        )
        assert sorted(i for batch in batches for i in batch) == list(range(500))
        assert all(len(batch) <= 16 and len(batch) * max(durations[i] for i in batch) <= 20.0 for batch in batches)
        assert batches != make_batches(
            durations, 20.0, seed=1, epoch=1, max_utterances=16, by_length=by_length, length_pool=pool
        )
        padding[by_length, pool] = sum(
            len(b) * max(durations[i] for i in b) - sum(durations[i] for i in b) for b in batches
        ) / sum(durations)
    assert padding[True, 0] < 0.05  # similar lengths together
    assert padding[False, 0] > 0.2  # drawn at random
    assert padding[False, 128] < 0.5 * padding[False, 0]  # random pools, sorted: far less padding
    for by_length, pool in ((True, 0), (False, 0), (False, 128)):  # nothing to batch: no batches
        assert make_batches([], 20.0, seed=1, epoch=0, by_length=by_length, length_pool=pool) == []
    stream = BatchStream(durations, 20.0, seed=1)
    first = [next(stream) for _ in range(5)]
    resumed = BatchStream(durations, 20.0, seed=1)
    resumed.restore({"epoch": 0, "position": 2})
    assert next(resumed) == first[2]


def test_package_writes_a_model_folder_with_its_provenance_and_card(tmp_path):
    """`training package` from the shipped model's own parts: the folder loads, and the card states
    the checkpoint's parameter count, the results given, and the data's size."""
    from safetensors.numpy import load_file

    from model.onnx import OnnxRecognizer
    from model.package import DEFAULT_MODEL, package_onnx

    manifest = tmp_path / "test.jsonl"
    manifest.write_text(
        json.dumps(
            {
                "audio": str(REPO / "examples/four-one-five-zero-two.wav"),
                "duration": 2.0,
                "text": "four one five zero two",
            }
        )
        + "\n"
    )
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"utterances": 1, "greedy": {"wer": 0.25}, "beam": {"wer": 0.0}}))
    out = tmp_path / "digits"
    # A training run's best checkpoint, with the record of the run's starts that training writes beside it.
    shutil.copytree(DEFAULT_MODEL / "checkpoint", tmp_path / "run" / "best")
    record_start(tmp_path / "run", 0)
    record_start(tmp_path / "run", 400)
    result = training(
        "package",
        "--out",
        str(out),
        "--checkpoint",
        str(tmp_path / "run" / "best"),
        "--onnx",
        str(DEFAULT_MODEL / "onnx"),
        "--lm",
        str(DEFAULT_MODEL / "lm.arpa"),
        "--lexicon",
        str(DEFAULT_MODEL / "lexicon.txt"),
        "--config",
        str(REPO / "training/configs/digits.yaml"),
        "--data",
        f"example={manifest}",
        "--results",
        f"the example={results}",
        "--card",
        str(REPO / "training/recipes/digits-card.md"),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "lexicon.txt").read_text() == (DEFAULT_MODEL / "lexicon.txt").read_text()
    provenance = json.loads((out / "provenance.json").read_text())
    weights = load_file(DEFAULT_MODEL / "checkpoint" / "model.safetensors")
    assert provenance["parameters"] == sum(tensor.size for tensor in weights.values())
    assert provenance["data"]["example"]["utterances"] == 1
    assert [start["step"] for start in provenance["training_sources"]] == [0, 400]
    assert provenance["training_sources"][0]["commit"] == provenance["commit"], "trained and packaged here"
    card = (out / "README.md").read_text()
    assert f"({provenance['parameters'] / 1e6:.1f} M parameters," in card
    assert "| the example | 1 | 25.00% | 0.00% |" in card
    assert "{" not in card.split("## Results")[0], "every placeholder before the results is filled"
    assert OnnxRecognizer(package_onnx(out)).vocab.tokens == OnnxRecognizer(package_onnx(DEFAULT_MODEL)).vocab.tokens

    def repackage(lexicon):
        return training(
            "package",
            "--out",
            str(out),
            "--checkpoint",
            str(DEFAULT_MODEL / "checkpoint"),
            "--onnx",
            str(DEFAULT_MODEL / "onnx"),
            "--lexicon",
            str(lexicon),
            "--config",
            str(REPO / "training/configs/digits.yaml"),
            "--card",
            str(REPO / "training/recipes/digits-card.md"),
        )

    assert repackage(out / "lexicon.txt").returncode == 0, "a rebuild in place keeps the folder's own lexicon"
    assert (out / "lexicon.txt").read_text() == (DEFAULT_MODEL / "lexicon.txt").read_text()
    (tmp_path / "words.txt").write_text("four\nCAFÉ\n")
    result = repackage(tmp_path / "words.txt")
    assert result.returncode == 1 and result.stderr.startswith("error: --lexicon ") and "'é'" in result.stderr


def test_package_records_uncommitted_sources_but_not_its_own_folder(tmp_path):
    """Rewriting a model folder the repository tracks (as `make digits-model` rewrites models/digits) is
    the output, not a change to what made it; a changed tracked source is."""

    from model.package import DEFAULT_MODEL

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    (tmp_path / "models" / "digits").mkdir(parents=True)
    (tmp_path / "models" / "digits" / "old.txt").write_text("the previous build\n")
    (tmp_path / "recipe.sh").write_text("echo made\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "first")

    def package():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "training",
                "package",
                "--out",
                "models/digits",
                "--checkpoint",
                str(DEFAULT_MODEL / "checkpoint"),
                "--onnx",
                str(DEFAULT_MODEL / "onnx"),
                "--config",
                str(REPO / "training/configs/digits.yaml"),
                "--card",
                str(REPO / "training/recipes/digits-card.md"),
            ],
            cwd=tmp_path,
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        return json.loads((tmp_path / "models" / "digits" / "provenance.json").read_text())

    first = package()
    assert len(first["commit"]) == 40 and first["uncommitted_changes"] is False
    assert not (tmp_path / "models" / "digits" / "old.txt").exists(), "the folder is replaced"
    (tmp_path / "recipe.sh").write_text("echo changed\n")
    assert package()["uncommitted_changes"] is True


@needs_data("digits-multi")
def test_digits_multi_split_is_speaker_disjoint_and_keeps_spoken_oh(tmp_path):
    """The digits recipe's dev speakers (which pick checkpoints) are never trained on; every source has
    some; AN4's transcripts say "oh" where the speaker did."""
    script = REPO / "training" / "recipes" / "digits_multi.py"
    result = subprocess.run(
        [sys.executable, str(script), "split", str(DATA / "digits-multi"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )
    assert result.returncode == 0, result.stderr
    with open(DATA / "digits-multi" / "manifest.tsv", encoding="utf-8") as handle:
        speaker = {
            (DATA / "digits-multi" / row["audio"]).resolve(): row["speaker"]
            for row in csv.DictReader(handle, delimiter="\t")
        }
    train, dev = read_manifest(tmp_path / "train.jsonl"), read_manifest(tmp_path / "dev.jsonl")
    assert len(train) + len(dev) == len(speaker) and len(dev) >= 0.1 * len(speaker)
    assert not {speaker[e.audio.resolve()] for e in train} & {speaker[e.audio.resolve()] for e in dev}
    for source in ("an4", "speechcommands", "audiomnist"):
        assert read_manifest(tmp_path / f"dev-{source}.jsonl"), source
    words = {word for entry in train + dev for word in entry.text.split()}
    assert "oh" in words and words <= {
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "oh",
    }
    # Leave speakers out: group 0 of 5 is the split above, and the five groups' dev sets hold every
    # recording once, each group's speakers disjoint from its training set.
    held_out = []
    for fold in range(5):
        folder = tmp_path / f"fold-{fold}"
        command = [sys.executable, str(script), "split", str(DATA / "digits-multi"), str(folder), "--fold", str(fold)]
        fold_result = subprocess.run([*command, "--folds", "5"], capture_output=True, text=True, timeout=HANG_SECONDS)
        assert fold_result.returncode == 0, fold_result.stderr
        fold_train, fold_dev = read_manifest(folder / "train.jsonl"), read_manifest(folder / "dev.jsonl")
        assert not {speaker[e.audio.resolve()] for e in fold_train} & {speaker[e.audio.resolve()] for e in fold_dev}
        assert len(fold_train) + len(fold_dev) == len(speaker)
        held_out += [entry.audio.resolve() for entry in fold_dev]
    assert read_manifest(tmp_path / "fold-0" / "dev.jsonl") == dev
    assert sorted(held_out) == sorted(speaker)
    noise = subprocess.run(
        [sys.executable, str(script), "noise", str(tmp_path / "noise"), "--count", "12"],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )
    assert noise.returncode == 0, noise.stderr
    clips = read_manifest(tmp_path / "noise" / "manifest.jsonl")
    assert len(clips) == 12 and all(clip.text == "" for clip in clips)
    levels = [np.sqrt(np.mean(soundfile.read(clip.audio)[0] ** 2)) for clip in clips]
    assert all(0 < level < 0.5 for level in levels) and max(levels) > 10 * min(levels)


def test_folds_table_counts_every_held_out_word_once(tmp_path):
    """The leave-speakers-out table sums errors and words over the folds (a fold with few words weighs
    little), per source and for all sources together."""
    counts = {  # fold -> source -> (words, errors with the LM)
        0: {"an4": (100, 5), "speechcommands": (20, 2), "audiomnist": (10, 0)},
        1: {"an4": (50, 10), "speechcommands": (30, 0), "audiomnist": (10, 1)},
    }
    for fold, sources in counts.items():
        (tmp_path / f"fold-{fold}" / "eval").mkdir(parents=True)
        for source, (words, errors) in sources.items():
            result = {
                "utterances": words // 5,
                "greedy": {"words": words, "substitutions": errors + 1, "deletions": 0, "insertions": 0},
                "beam": {"words": words, "substitutions": errors, "deletions": 0, "insertions": 0},
            }
            (tmp_path / f"fold-{fold}" / "eval" / f"{source}.json").write_text(json.dumps(result))
    script = REPO / "training" / "recipes" / "digits_multi.py"
    result = subprocess.run(
        [sys.executable, str(script), "folds-table", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=HANG_SECONDS,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in result.stdout.splitlines() if "|" in line}
    assert [cell.strip() for cell in rows["AN4 connected strings"]] == ["30", "150", "11.33%", "10.00%"]
    assert [cell.strip() for cell in rows["all sources"]] == ["44", "220", "10.91%", "8.18%"]
    assert "fold by fold: 5.38%, 12.22%" in result.stdout
    empty = subprocess.run(
        [sys.executable, str(script), "folds-table", str(tmp_path / "none")], capture_output=True, text=True
    )
    assert empty.returncode != 0 and "digits-multi-folds.sh" in empty.stderr


def test_noisy_copies_keep_transcripts_and_put_noise_at_the_asked_level(tmp_path):
    """`digits_multi.py noisy` (the noisy-microphone evaluation): each recording with noise before, under
    and after it, SNR_DB below the recording's level, the transcript unchanged; babble from a folder."""
    rate, generator = 16000, np.random.default_rng(0)
    entries = []
    for index in range(4):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 50 * index) * np.arange(rate) / rate)
        soundfile.write(tmp_path / f"voice{index}.wav", tone.astype(np.float32), rate)
        entries.append(Entry(tmp_path / f"voice{index}.wav", 1.0, f"one {index}"))
    write_manifest(entries, tmp_path / "in.jsonl")
    (tmp_path / "talkers").mkdir()
    soundfile.write(tmp_path / "talkers" / "a.flac", generator.uniform(-0.1, 0.1, 2 * rate).astype(np.float32), rate)
    script = REPO / "training" / "recipes" / "digits_multi.py"

    def noisy(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, str(script), "noisy", str(tmp_path / "in.jsonl"), str(tmp_path / "out"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=HANG_SECONDS)

    result = noisy("--snr", "10", "--babble", str(tmp_path / "talkers"))
    assert result.returncode == 0, result.stderr
    copies = read_manifest(tmp_path / "out" / "manifest.jsonl")
    assert [copy.text for copy in copies] == [entry.text for entry in entries]
    for copy in copies:
        samples, copy_rate = soundfile.read(copy.audio)
        assert (
            copy_rate == rate and 2.0 <= len(samples) / rate <= 4.0 and copy.duration == round(len(samples) / rate, 3)
        )
        lead = samples[: rate // 2]  # before the speech: the noise alone
        snr = 20 * np.log10(0.3 / np.sqrt(2) / np.sqrt(np.mean(lead**2)))
        assert 7 < snr < 13, snr  # 10 dB, give or take one draw of half a second of noise
    for bad, message in (
        (["--snr", "10", "--kinds", "rain"], "(not rain)"),
        (["--snr", "10", "--babble", str(tmp_path / "out" / "none")], "no wav"),
    ):
        failed = noisy(*bad)
        assert failed.returncode != 0 and message in failed.stderr, failed.stderr

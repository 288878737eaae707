"""`python -m training finetune | pseudo-label | synth`: CTC fine-tuning on real speech, checkpoints that
transformers loads with identical logits, exact resume, two processes, self-training's labels, and the
synthetic corpus."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
import yaml

from model.audio import load_audio
from model.ctc import CTCVocabulary
from model.pytorch.checkpoint import load_checkpoint
from training.loop import tri_stage
from training.manifest import Entry, read_manifest, write_manifest

from conftest import DATA, HANG_SECONDS, REPO, needs_data, require_data

# A model small enough to overfit a handful of spoken digits in well under a minute on one core. The
# layer-norm-first layout (the paper's large model) learns from scratch much sooner than the base layout.
TINY = [
    "model.preset=tiny",
    "model.hidden_size=64",
    "model.num_hidden_layers=2",
    "model.conv_dim=[32,32,32,32,32,32,32]",
    "model.num_conv_pos_embeddings=16",
    "model.feat_extract_norm=layer",
    "model.do_stable_layer_norm=true",
    "model.conv_bias=true",
    "model.layerdrop=0",
    "model.hidden_dropout=0",
    "model.attention_dropout=0",
    "model.activation_dropout=0",
    "model.final_dropout=0",
    "model.num_codevectors_per_group=16",
    "model.codevector_dim=32",
    "model.proj_codevector_dim=32",
]
QUIET = ["mask_time_prob=0", "mask_channel_prob=0", "max_batch_seconds=8", "lr_phases=[0.05,0.85,0.1]"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def training(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
        env=ENV,
    )


def metrics(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Eight real recordings of eight different digits by three speakers (FSDD)."""
    require_data("fsdd")
    entries = {entry.text: entry for entry in read_manifest_of_fsdd() if entry.audio.stem.endswith("_10")}
    chosen = [entries[word] for word in ("zero", "one", "two", "three", "four", "five", "six", "seven")]
    path = tmp_path_factory.mktemp("digits") / "digits.jsonl"
    write_manifest(chosen, path)
    return path


def read_manifest_of_fsdd():
    from training.manifest import build_manifest

    entries, _ = build_manifest(transcripts=DATA / "fsdd" / "transcripts_train.tsv")
    speakers = {"george", "jackson", "lucas"}
    return [entry for entry in entries if entry.audio.stem.split("_")[1] in speakers]


@pytest.fixture(scope="module")
def overfit(digits, tmp_path_factory):
    """From scratch to CER 0 on the eight digits (the run every later test reads)."""
    out = tmp_path_factory.mktemp("overfit") / "run"
    result = training(
        "finetune",
        f"train_manifest={digits}",
        f"eval_manifest={digits}",
        f"output_dir={out}",
        *TINY,
        *QUIET,
        "freeze_feature_encoder=false",
        "freeze_transformer_steps=0",
        "learning_rate=3e-3",
        "max_steps=500",
        "eval_every=100",
        "save_every=500",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_finetuning_overfits_a_handful_of_real_utterances(overfit):
    evaluations = [record for record in metrics(overfit) if "eval" in record]
    assert [record["step"] for record in evaluations] == [100, 200, 300, 400, 500]
    best = json.loads((overfit / "best" / "eval.json").read_text())
    assert best["eval"]["greedy"]["cer"] <= 0.05 and best["eval"]["greedy"]["wer"] <= 0.125, best
    losses = [record["loss"] for record in metrics(overfit) if "loss" in record]
    assert losses[-1] < 0.2 * losses[0]
    # The vocabulary was built from the transcripts, laid out as Hugging Face's character models.
    vocab = CTCVocabulary.from_folder(overfit / "best")
    assert [vocab.tokens[i] for i in range(5)] == ["<pad>", "<s>", "</s>", "<unk>", "|"]
    assert set(vocab.tokens.values()) - {"<pad>", "<s>", "</s>", "<unk>", "|"} == set("zeroonetwothreefourfivesixseven")


def test_the_best_checkpoint_transcribes_through_the_cli_and_evaluate(overfit, digits):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "model",
            "transcribe",
            "--model",
            str(overfit / "best"),
            str(read_manifest(digits)[3].audio),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert "three" in result.stdout
    report = training("evaluate", "--model", str(overfit / "best"), "--manifest", str(digits))
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["greedy"]["wer"] <= 0.125


def test_checkpoints_load_in_transformers_with_identical_logits(overfit, digits):
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    folder = overfit / "best"
    ours = load_checkpoint(folder).model.eval()
    theirs = Wav2Vec2ForCTC.from_pretrained(folder).eval()
    processor = Wav2Vec2Processor.from_pretrained(folder)
    audio = [load_audio(entry.audio, 16000) for entry in read_manifest(digits)]
    for samples in audio:
        inputs = processor(samples, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            expected = theirs(inputs.input_values).logits
            got = ours(inputs.input_values)
        assert torch.allclose(got, expected, atol=1e-5), float((got - expected).abs().max())
        assert processor.batch_decode(expected.argmax(-1))[0] in {
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
        }
    # Intermediate checkpoints are model folders too.
    assert Wav2Vec2ForCTC.from_pretrained(overfit / "checkpoint-500") is not None


def test_checkpoints_are_picked_by_beam_search_within_the_lexicon(overfit, digits, tmp_path):
    """`lexicon` restricts the training-time beam search as a model folder's lexicon.txt restricts the
    server's: the same trained model, one update on, scores near zero within its eight words and fails
    every utterance but "zero" within a lexicon of that word alone."""
    lm = tmp_path / "digits.arpa"
    made = training("lm", "--manifest", str(digits), "--out", str(lm))
    assert made.returncode == 0, made.stderr[-3000:]
    words = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
    beam = {}
    for name, lexicon in (("all", words), ("zero", ["zero"])):
        (tmp_path / f"{name}.txt").write_text("\n".join(lexicon) + "\n")
        result = training(
            "finetune",
            f"init={overfit / 'best'}",
            f"train_manifest={digits}",
            f"eval_manifest={digits}",
            f"output_dir={tmp_path / name}",
            *QUIET,
            "learning_rate=1e-6",
            "max_steps=1",
            "eval_every=1",
            f"lm={lm}",
            f"lexicon={tmp_path / f'{name}.txt'}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        beam[name] = json.loads((tmp_path / name / "best" / "eval.json").read_text())["eval"]["beam"]
    assert beam["all"]["wer"] <= 0.125, beam
    assert beam["zero"]["wer"] >= 7 / 8 and beam["zero"]["substitutions"] + beam["zero"]["deletions"] >= 7, beam
    refused = training("finetune", f"train_manifest={digits}", "freeze_feature_encoder=false", f"lexicon={lm}")
    assert refused.returncode == 1 and "give lm too" in refused.stderr


def test_finetune_resumes_exactly(digits, tmp_path):
    common = [
        f"train_manifest={digits}",
        *TINY,
        "max_batch_seconds=3",
        "freeze_feature_encoder=false",
        "freeze_transformer_steps=2",
        "mask_time_prob=0.3",
        "mask_time_length=4",
        "mask_time_min_masks=1",
        "mask_channel_prob=0.2",
        "mask_channel_length=8",
        "model.hidden_dropout=0.1",
        "log_every=1",
        "learning_rate=1e-3",
    ]
    straight = training("finetune", *common, f"output_dir={tmp_path / 'straight'}", "max_steps=6", "save_every=6")
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = training("finetune", *common, f"output_dir={tmp_path / 'split'}", "max_steps=6", "save_every=3")
    assert first.returncode == 0
    shutil.rmtree(tmp_path / "split" / "checkpoint-6")  # as if stopped after step 3
    (tmp_path / "split" / "metrics.jsonl").write_text(
        "".join(line + "\n" for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()[:3])
    )
    resumed = training(
        "finetune",
        *common,
        f"output_dir={tmp_path / 'split'}",
        "max_steps=6",
        "save_every=3",
        "--resume",
        str(tmp_path / "split" / "checkpoint-3"),
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = metrics(tmp_path / "straight"), metrics(tmp_path / "split")
    assert [m["step"] for m in got] == [1, 2, 3, 4, 5, 6]
    assert [m["frozen"] for m in got] == [True, True, False, False, False, False]
    for a, b in zip(expected, got):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-5)
    # Each start is on record with the commit it ran at, which a model folder's provenance carries on.
    starts = json.loads((tmp_path / "split" / "sources.json").read_text())
    assert [start["step"] for start in starts] == [0, 3]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert {start["commit"] for start in starts} == {head or "unknown"}


def test_the_moving_average_is_what_is_kept_and_it_resumes_exactly(digits, tmp_path):
    """With ema_decay, `best` holds the average of the weights after each update (not the last
    update's weights), and a resumed run ends with the same average as an uninterrupted one."""
    from model.pytorch.checkpoint import load_checkpoint

    common = [
        f"train_manifest={digits}",
        f"eval_manifest={digits}",
        *TINY,
        "max_batch_seconds=3",
        "freeze_feature_encoder=false",
        "freeze_transformer_steps=0",
        "learning_rate=1e-3",
        "ema_decay=0.5",
        "max_steps=4",
        "eval_every=4",
        "save_every=2",
        "keep_checkpoints=3",
    ]
    straight = training("finetune", *common, f"output_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    resumed = training("finetune", *common, f"output_dir={tmp_path / 'split'}", "max_steps=4")
    assert resumed.returncode == 0
    shutil.rmtree(tmp_path / "split" / "checkpoint-4")
    resumed = training(
        "finetune", *common, f"output_dir={tmp_path / 'split'}", "--resume", str(tmp_path / "split" / "checkpoint-2")
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    def weights(folder):
        return {name: value.float() for name, value in load_checkpoint(folder).model.state_dict().items()}

    trained = [weights(tmp_path / "straight" / f"checkpoint-{step}") for step in (2, 4)]
    best, resumed_best = weights(tmp_path / "straight" / "best"), weights(tmp_path / "split" / "best")
    name = "lm_head.weight"
    assert not torch.allclose(best[name], trained[1][name])  # not the last update's weights
    # After update 4 the average is 0.5 x (average after 3) + 0.5 x (weights after 4): between the two.
    assert torch.all((best[name] - trained[1][name]).abs() <= (trained[0][name] - trained[1][name]).abs().max() * 2)
    for key in best:
        assert torch.allclose(best[key], resumed_best[key], atol=1e-5), key


def test_frozen_parts_do_not_change(unlabeled_pretrained, digits, tmp_path):
    """From a pretraining checkpoint: the feature encoder stays frozen throughout; the transformer
    trains only after `freeze_transformer_steps`."""
    out = tmp_path / "ft"
    result = training(
        "finetune",
        f"train_manifest={digits}",
        f"init={unlabeled_pretrained}",
        f"output_dir={out}",
        *QUIET,
        "freeze_transformer_steps=2",
        "max_steps=4",
        "save_every=2",
        "learning_rate=1e-3",
        "model.layerdrop=0",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    start = load_checkpoint(unlabeled_pretrained).model.wav2vec2.state_dict()
    at = {step: load_checkpoint(out / f"checkpoint-{step}").model for step in (2, 4)}
    for name, tensor in start.items():
        if name.startswith("feature_extractor."):
            assert torch.equal(at[4].wav2vec2.state_dict()[name], tensor), name
    layer = "encoder.layers.0.attention.q_proj.weight"
    assert torch.equal(at[2].wav2vec2.state_dict()[layer], start[layer]), "frozen for the first two updates"
    assert not torch.equal(at[4].wav2vec2.state_dict()[layer], start[layer]), "trained after them"
    assert not torch.equal(at[2].lm_head.weight, at[4].lm_head.weight)


@pytest.fixture(scope="module")
def unlabeled_pretrained(tmp_path_factory):
    require_data("unlabeled-librispeech")
    folder = tmp_path_factory.mktemp("pretrained")
    manifest = folder / "unlabeled.jsonl"
    from training.manifest import build_manifest

    entries, _ = build_manifest(DATA / "unlabeled-librispeech")
    write_manifest(entries[:6], manifest)
    result = training(
        "pretrain",
        f"manifest={manifest}",
        f"output_dir={folder / 'run'}",
        *TINY,
        "max_steps=2",
        "warmup_steps=1",
        "max_batch_seconds=8",
        "max_sample_seconds=2",
        "num_negatives=10",
        "save_every=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run" / "checkpoint-2"


def test_finetune_on_two_processes_with_torchrun(digits, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "training",
            "finetune",
            f"train_manifest={digits}",
            f"output_dir={tmp_path / 'ddp'}",
            *TINY,
            *QUIET,
            "freeze_feature_encoder=false",
            "freeze_transformer_steps=1",
            "max_batch_seconds=2",
            "max_steps=4",
            "log_every=1",
            "save_every=4",
            "learning_rate=1e-3",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
        env=ENV,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    got = metrics(tmp_path / "ddp")
    assert [m["step"] for m in got] == [1, 2, 3, 4], "rank 0 alone writes the metrics"
    assert (tmp_path / "ddp" / "checkpoint-4" / "model.safetensors").is_file()


def test_finetune_refuses_bad_settings(digits, tmp_path):
    scratch = training("finetune", f"train_manifest={digits}", f"output_dir={tmp_path}", *TINY)
    assert scratch.returncode == 1 and "freeze_feature_encoder=false" in scratch.stderr
    unknown = training("finetune", f"train_manifest={digits}", "learning_rat=1")
    assert unknown.returncode == 1 and "unknown settings: learning_rat" in unknown.stderr
    missing = training("finetune", "freeze_feature_encoder=false")
    assert missing.returncode == 1 and "train_manifest" in missing.stderr
    phases = training("finetune", f"train_manifest={digits}", "freeze_feature_encoder=false", "lr_phases=[0.5,0.6]")
    assert phases.returncode == 1 and "lr_phases" in phases.stderr
    not_a_model = training("finetune", f"train_manifest={digits}", f"init={tmp_path}")
    assert not_a_model.returncode == 1 and "config.json" in not_a_model.stderr
    talk = training(
        "finetune", f"train_manifest={digits}", "freeze_feature_encoder=false", "augment.noise_kinds=[talk]"
    )
    assert talk.returncode == 1 and "give talk_manifest" in talk.stderr


def test_pseudo_labels_keep_confident_transcripts(overfit, digits, tmp_path):
    unlabeled = tmp_path / "unlabeled.jsonl"
    entries = read_manifest(digits)
    write_manifest([type(entry)(entry.audio, entry.duration) for entry in entries], unlabeled)
    out, scores = tmp_path / "pseudo.jsonl", tmp_path / "scores.jsonl"
    result = training(
        "pseudo-label",
        "--model",
        str(overfit / "best"),
        "--manifest",
        str(unlabeled),
        "--out",
        str(out),
        "--min-confidence",
        "0.5",
        "--labelled",
        str(digits),
        "--scores-out",
        str(scores),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in scores.read_text().splitlines()]
    assert len(rows) == 8 and all("reference" not in row for row in rows), "the unlabeled manifest has no text"
    assert all(0.0 <= row["posterior"] <= 1.0 and 0.0 <= row["words"] <= 1.0 and "nbest" not in row for row in rows)
    written = read_manifest(out)
    real, pseudo = written[:8], written[8:]
    assert [entry.text for entry in real] == [entry.text for entry in entries], "the real labels come first"
    assert len(pseudo) >= 6, result.stdout
    by_audio = {entry.audio.resolve(): entry.text for entry in entries}
    correct = sum(by_audio[entry.audio.resolve()] == entry.text for entry in pseudo)
    assert correct >= len(pseudo) - 1
    strict = training(
        "pseudo-label",
        "--model",
        str(overfit / "best"),
        "--manifest",
        str(unlabeled),
        "--out",
        str(tmp_path / "none.jsonl"),
        "--min-confidence",
        "1.0",
        "--confidence",
        "words",
    )
    assert strict.returncode == 0 and "0 of 8 utterances kept" in strict.stdout
    no_beam = training(
        "pseudo-label",
        "--model",
        str(overfit / "best"),
        "--manifest",
        str(unlabeled),
        "--out",
        str(tmp_path / "none.jsonl"),
        "--confidence",
        "nbest",
    )
    assert no_beam.returncode == 1 and "--lm" in no_beam.stderr


def test_the_text_posterior_falls_when_the_text_is_wrong(overfit, digits):
    """The posterior confidence of the model's own transcript is high; of the same transcript with one
    letter changed, or another digit, it is far lower, however probable each frame's best token is."""
    from model.decoding import Decoded, Word
    from model.loading import load_recognizer
    from model.transcribe import DecodeOptions, Transcriber
    from training.pseudo_label import confidence_scores

    transcriber = Transcriber(load_recognizer(str(overfit / "best")))
    vocab = transcriber.recognizer.vocab
    checked = 0
    for entry in read_manifest(digits):
        logits = transcriber.logits([transcriber.recognizer.read(entry.audio)])[0]
        decoded, _ = transcriber.decode(logits, DecodeOptions("greedy"))
        if decoded.text != entry.text:
            continue
        own = confidence_scores(vocab, logits, decoded)
        assert own["posterior"] > 0.5, (entry.text, own)
        misspelt = decoded.text[:-1] + ("e" if decoded.text[-1] != "e" else "o")  # both letters are in the vocabulary
        for wrong in (misspelt, "nine" if entry.text != "nine" else "one"):
            scores = confidence_scores(vocab, logits, Decoded(wrong, [Word(wrong, 0.0, 0.1, own["words"])]))
            assert scores["posterior"] < own["posterior"] / 10, (entry.text, wrong, scores, own)
            assert scores["words"] == own["words"], "the word confidence cannot tell them apart"
        checked += 1
    assert checked >= 6, "the overfit model transcribes most of its eight digits right"


def test_tri_stage_schedule():
    factor = tri_stage(100, (0.1, 0.4, 0.5), init_scale=0.01, final_scale=0.05)
    assert factor(0) == pytest.approx(0.01)
    assert factor(5) == pytest.approx(0.505)
    assert factor(10) == factor(49) == 1.0
    assert factor(75) == pytest.approx(0.05**0.5)
    assert factor(100) == pytest.approx(0.05) and factor(500) == pytest.approx(0.05)


def test_vocabulary_encodes_transcripts():
    vocab = CTCVocabulary.from_texts(["Hello, World!", "it's"])
    ids = vocab.encode("HELLO  wor-ld?")
    assert [vocab.tokens[i] for i in ids] == list("hello") + ["|"] + list("wor") + ["|"] + list("ld")
    assert vocab.tokens[vocab.encode("q")[0]] == "<unk>"
    upper = CTCVocabulary(tokens=dict(enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B"])))
    assert upper.encode("ab ba") == [5, 6, 4, 6, 5], "upper-case vocabularies get upper-case targets"


needs_voices = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("flite") is None,
    reason="espeak-ng and flite are not installed (.ci/run installs them)",
)


@needs_voices
def test_synth_speaks_a_text_file_with_both_engines(tmp_path):
    text = tmp_path / "sentences.txt"
    text.write_text(
        "the cat sat on the mat\nshe sells sea shells by the shore\ntoo short\n"
        "a very long line " + "with many words " * 20 + "\n"
    )
    out = tmp_path / "synth"
    result = training(
        "synth",
        "--text",
        str(text),
        "--out",
        str(out),
        "--count",
        "4",
        "--min-words",
        "3",
        "--max-words",
        "10",
        "--voices",
        "espeak:en-us,flite:slt",
        "--speed",
        "0.7",
        "1.3",
        "--seed",
        "3",
    )
    assert result.returncode == 0, result.stderr
    entries = read_manifest(out / "manifest.jsonl")
    assert len(entries) == 4
    assert {entry.text for entry in entries} == {"the cat sat on the mat", "she sells sea shells by the shore"}
    for entry in entries:
        samples, rate = soundfile.read(entry.audio)
        assert rate == 16000 and samples.ndim == 1
        assert abs(len(samples) / rate - entry.duration) < 0.01 and 0.8 < entry.duration < 6
        assert np.abs(samples).max() > 0.05, "speech, not silence"
    same = [entry for entry in entries if entry.text == "the cat sat on the mat"]
    assert len(same) == 2 and same[0].duration != same[1].duration, "two voices or speeds, two durations"
    # Negatives for a digits model: only sentences without the given words, written with an empty text.
    negatives = training(
        "synth",
        "--text",
        str(text),
        "--out",
        str(tmp_path / "neg"),
        "--count",
        "2",
        "--without-words",
        "cat,mat",
        "--empty-text",
        "--voices",
        "espeak:en-us",
    )
    assert negatives.returncode == 0, negatives.stderr
    assert [entry.text for entry in read_manifest(tmp_path / "neg" / "manifest.jsonl")] == ["", ""]
    none_left = training(
        "synth",
        "--text",
        str(text),
        "--out",
        str(tmp_path / "none"),
        "--without-words",
        "the,too",
        "--voices",
        "espeak:en-us",
    )
    assert none_left.returncode == 1 and "no line" in none_left.stderr


def test_digit_strings_can_say_more_zeros():
    """--zero-fraction makes zeros (and so "oh") as common as asked; without it all ten digits are alike."""
    from training.synth import digit_strings

    def zeros(strings: list[str]) -> float:
        words = " ".join(strings).split()
        return sum(word in ("zero", "oh") for word in words) / len(words)

    plain = digit_strings(2000, 3, 7, 0.3, seed=1)
    assert 0.08 < zeros(plain) < 0.12 and plain == digit_strings(2000, 3, 7, 0.3, seed=1)
    many = digit_strings(2000, 3, 7, 1.0, seed=1, zero_fraction=0.4)
    assert 0.37 < zeros(many) < 0.43 and "zero" not in " ".join(many).split()
    words = " ".join(many).split()
    assert {"one", "five", "nine"} <= set(words) and all(3 <= len(text.split()) <= 7 for text in many)
    assert zeros(digit_strings(200, 1, 3, 0.5, seed=2, zero_fraction=0.0)) == 0.0


needs_festival = pytest.mark.skipif(
    shutil.which("text2wave") is None, reason="Festival is not installed (.ci/run installs it)"
)


@needs_voices
@needs_festival
def test_synth_speaks_digit_strings_with_every_english_voice(tmp_path):
    from training.synth import english_voices

    voices = english_voices()
    engines = {voice.engine for voice in voices}
    assert engines == {"espeak", "flite", "festival"}
    names = {f"{voice.engine}:{voice.name}" for voice in voices}
    assert {"festival:kal_diphone", "festival:cmu_us_slt_arctic_hts", "flite:slt", "espeak:en-us"} <= names
    assert any(name.startswith("espeak:en-gb-scotland+") for name in names), "espeak variants too"
    out = tmp_path / "digits"
    result = training(
        "synth",
        "--digits",
        "2",
        "4",
        "--oh-fraction",
        "1",
        "--out",
        str(out),
        "--count",
        "6",
        "--voices",
        "english",
        "--seed",
        "5",
    )
    assert result.returncode == 0, result.stderr
    entries = read_manifest(out / "manifest.jsonl")
    words = {"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh"}
    assert len(entries) == 6
    for entry in entries:
        assert 2 <= len(entry.text.split()) <= 4 and set(entry.text.split()) <= words - {"zero"}
        samples, rate = soundfile.read(entry.audio)
        assert rate == 16000 and np.abs(samples).max() > 0.05 and 0.5 < entry.duration < 8
    festival = training(
        "synth",
        "--digits",
        "3",
        "3",
        "--out",
        str(tmp_path / "f"),
        "--count",
        "2",
        "--voices",
        "festival:kal_diphone,festival:cmu_us_slt_arctic_hts",
    )
    assert festival.returncode == 0, festival.stderr
    assert len(read_manifest(tmp_path / "f" / "manifest.jsonl")) == 2
    unknown = training("synth", "--digits", "1", "2", "--out", str(tmp_path / "o"), "--voices", "festival:nobody")
    assert unknown.returncode == 1 and "festival has no voice 'nobody'" in unknown.stderr
    assert "kal_diphone" in unknown.stderr


@needs_voices
def test_synth_errors_are_one_line(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("one two three four\n")
    bad_voice = training("synth", "--text", str(text), "--out", str(tmp_path / "o"), "--voices", "mbrola:x")
    assert bad_voice.returncode == 1 and "expected espeak:NAME, flite:NAME or festival:NAME" in bad_voice.stderr
    no_lines = training("synth", "--text", str(text), "--out", str(tmp_path / "o"), "--min-words", "8")
    assert no_lines.returncode == 1 and "no line of 8-20 words" in no_lines.stderr
    unknown = training(
        "synth", "--text", str(text), "--out", str(tmp_path / "o"), "--voices", "espeak:no-such-voice", "--count", "1"
    )
    assert unknown.returncode == 1 and "espeak-ng has no voice 'espeak:no-such-voice'" not in unknown.stderr
    assert "espeak-ng has no voice 'no-such-voice'" in unknown.stderr and "en-us" in unknown.stderr
    variant = training("synth", "--text", str(text), "--out", str(tmp_path / "o"), "--voices", "espeak:en-us+zz9")
    assert variant.returncode == 1 and "no voice 'en-us+zz9'" in variant.stderr
    flite = training("synth", "--text", str(text), "--out", str(tmp_path / "o"), "--voices", "flite:nobody")
    assert flite.returncode == 1 and "flite has no voice 'nobody'" in flite.stderr and "slt" in flite.stderr


def test_the_fsdd_recipe_runs_and_decodes_its_audio_once(digits, tmp_path):
    """training/configs/fsdd-scratch.yaml loads and trains a few updates; the audio is decoded once,
    before the first update, and the best checkpoint transcribes through the CLI."""
    out = tmp_path / "recipe"
    result = training(
        "finetune",
        "--config",
        str(REPO / "training/configs/fsdd-scratch.yaml"),
        f"train_manifest={digits}",
        f"eval_manifest={digits}",
        f"output_dir={out}",
        "max_steps=3",
        "eval_every=3",
        "log_every=1",
        "max_batch_utterances=4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training audio: 8 utterances, decoded once and kept in memory" in result.stdout
    steps = [record for record in metrics(out) if "loss" in record]
    assert [record["step"] for record in steps] == [1, 2, 3]
    assert all(record["audio_seconds_per_second"] > 0 for record in steps)
    recipe = yaml.safe_load((REPO / "training/configs/fsdd-scratch.yaml").read_text())
    saved = json.loads((out / "best" / "config.json").read_text())
    assert saved["mask_time_prob"] == recipe["mask_time_prob"]
    assert saved["mask_time_min_masks"] == recipe["mask_time_min_masks"]
    assert saved["hidden_size"] == recipe["model"]["hidden_size"]
    transcribed = subprocess.run(
        [
            sys.executable,
            "-m",
            "model",
            "transcribe",
            "--model",
            str(out / "best"),
            str(read_manifest(digits)[0].audio),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=HANG_SECONDS,
    )
    assert transcribed.returncode == 0, transcribed.stderr


def test_the_digits_recipe_stages_run_with_an_english_vocabulary(digits, tmp_path):
    """The default model's two stages, a few updates each: fsdd-scratch.yaml with vocab=english, then
    digits.yaml (augmentation on) from the first stage's checkpoint, keeping its head."""
    first, second = tmp_path / "isolated", tmp_path / "train"
    common = [
        f"train_manifest={digits},{digits}",
        f"eval_manifest={digits}",
        "max_steps=2",
        "eval_every=2",
        "max_batch_utterances=4",
    ]
    result = training(
        "finetune",
        "--config",
        str(REPO / "training/configs/fsdd-scratch.yaml"),
        "vocab=english",
        f"output_dir={first}",
        *common,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "training audio: 16 utterances" in result.stdout, "two manifests, comma-separated"
    result = training(
        "finetune",
        "--config",
        str(REPO / "training/configs/digits.yaml"),
        f"init={first / 'best'}",
        f"output_dir={second}",
        *common,
        f"talk_manifest={digits}",  # talk noise too (here made of digits: it only has to run)
        "augment.noise_kinds=[pink, talk]",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    english = CTCVocabulary.english()
    for folder in (first / "best", second / "best"):
        assert CTCVocabulary.from_folder(folder).tokens == english.tokens
    assert json.loads((second / "training_config.json").read_text())["augment"]["resample_rates"]


def test_the_fsdd_pretraining_recipe_feeds_the_fine_tuning_recipe(digits, tmp_path):
    """fsdd-pretrain.yaml pretrains a few updates on unlabeled FSDD audio; fsdd-scratch.yaml fine-tunes
    from that checkpoint (the same architecture: every body weight is taken, none left random)."""
    unlabeled = tmp_path / "unlabeled.jsonl"
    write_manifest([Entry(entry.audio, entry.duration) for entry in read_manifest(digits)], unlabeled)
    pretrained = tmp_path / "pretrain"
    result = training(
        "pretrain",
        "--config",
        str(REPO / "training/configs/fsdd-pretrain.yaml"),
        f"manifest={unlabeled}",
        f"output_dir={pretrained}",
        "max_steps=2",
        "save_every=2",
        "log_every=1",
        "max_batch_seconds=4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (pretrained / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == [1, 2] and all(0 <= r["accuracy"] <= 1 for r in records)
    out = tmp_path / "finetune"
    result = training(
        "finetune",
        "--config",
        str(REPO / "training/configs/fsdd-scratch.yaml"),
        f"init={pretrained / 'checkpoint-2'}",
        f"train_manifest={digits}",
        f"eval_manifest={digits}",
        f"output_dir={out}",
        "max_steps=1",
        "eval_every=1",
        "max_batch_utterances=4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    start = load_checkpoint(pretrained / "checkpoint-2").model.state_dict()
    tuned = load_checkpoint(out / "best").model.state_dict()
    conv = "wav2vec2.feature_extractor.conv_layers.5.conv.weight"
    assert tuned[conv].shape == start[conv].shape
    assert (tuned[conv] - start[conv]).abs().max() < 0.05, "one update moves the pretrained weights only a little"


def test_the_audio_store_decodes_each_file_once_when_it_fits(digits):
    from training.audio_store import AudioStore

    entries = read_manifest(digits)
    paths, durations = [entry.audio for entry in entries], [entry.duration for entry in entries]
    preloaded = AudioStore(paths, durations, 16000, preload_bytes=1e9)
    on_demand = AudioStore(paths, durations, 16000, preload_bytes=0)
    try:
        for _ in range(3):
            for indices in ([0, 1, 2], [3, 4], [5, 6, 7]):
                for a, b in zip(preloaded.batch(indices), on_demand.batch(indices)):
                    assert np.array_equal(a, b)
        assert preloaded.preloaded and preloaded.decodes == len(entries)
        assert not on_demand.preloaded and on_demand.decodes == 3 * len(entries)
        assert np.array_equal(preloaded.batch([0])[0], load_audio(entries[0].audio, 16000))
    finally:
        preloaded.close()
        on_demand.close()


def test_resume_keeps_the_runs_schedule_unless_rescheduled(digits, tmp_path):
    common = [
        f"train_manifest={digits}",
        *TINY,
        *QUIET,
        "freeze_feature_encoder=false",
        "freeze_transformer_steps=0",
        "lr_schedule=linear",
        "warmup_steps=1",
        "learning_rate=1e-3",
        "log_every=1",
        "save_every=4",
    ]
    first = training("finetune", *common, f"output_dir={tmp_path / 'run'}", "max_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = str(tmp_path / "run" / "checkpoint-4")
    kept = training("finetune", *common, f"output_dir={tmp_path / 'kept'}", "max_steps=6", "--resume", checkpoint)
    assert kept.returncode == 0, kept.stderr[-3000:]
    assert "resumed on the run's own learning-rate schedule" in kept.stdout and "max_steps 4 -> 6" in kept.stdout
    # The run's own linear decay reached 0 at its step 4: it stays there.
    assert [record["learning_rate"] for record in metrics(tmp_path / "kept")] == [0.0, 0.0]
    moved = training(
        "finetune", *common, f"output_dir={tmp_path / 'moved'}", "max_steps=6", "--resume", checkpoint, "--reschedule"
    )
    assert moved.returncode == 0, moved.stderr[-3000:]
    assert "resumed on this config's learning-rate schedule" in moved.stdout
    # Linear decay over 6 updates: after update 5, 1/5 of the peak is left; after 6, none.
    assert [record["learning_rate"] for record in metrics(tmp_path / "moved")] == pytest.approx([2e-4, 0.0])
    same = training("finetune", *common, f"output_dir={tmp_path / 'same'}", "max_steps=4", "--resume", checkpoint)
    assert same.returncode == 0 and "schedule" not in same.stdout


def test_weight_decay_skips_biases_norms_and_the_mask_embedding():
    from model.config import Wav2Vec2Config
    from model.pytorch.wav2vec2 import Wav2Vec2ForCTC
    from training.loop import adamw

    model = Wav2Vec2ForCTC(
        Wav2Vec2Config(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            conv_dim=[8] * 7,
            num_conv_pos_embedding_groups=2,
            vocab_size=5,
        )
    )
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    decayed, kept = adamw(model, 1e-3, 0.01).param_groups
    assert decayed["weight_decay"] == 0.01 and kept["weight_decay"] == 0.0
    decayed_names = {names[id(p)] for p in decayed["params"]}
    kept_names = {names[id(p)] for p in kept["params"]}
    assert "lm_head.weight" in decayed_names and "wav2vec2.encoder.layers.0.attention.q_proj.weight" in decayed_names
    assert "wav2vec2.feature_extractor.conv_layers.0.conv.weight" in decayed_names
    assert {
        "lm_head.bias",
        "wav2vec2.masked_spec_embed",
        "wav2vec2.encoder.layer_norm.weight",
        "wav2vec2.feature_extractor.conv_layers.0.layer_norm.weight",
        "wav2vec2.encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    } <= kept_names
    assert len(decayed_names) + len(kept_names) == len(names)


def test_masking_is_a_finetuning_setting(digits, tmp_path):
    old_place = training(
        "finetune",
        f"train_manifest={digits}",
        "freeze_feature_encoder=false",
        "model.mask_time_min_masks=1",
        f"output_dir={tmp_path}",
    )
    assert old_place.returncode == 1 and "masking is a fine-tuning setting" in old_place.stderr
    reduction = training(
        "finetune",
        f"train_manifest={digits}",
        "freeze_feature_encoder=false",
        "ctc_loss_reduction=total",
        f"output_dir={tmp_path}",
    )
    assert reduction.returncode == 1 and "ctc_loss_reduction" in reduction.stderr


@needs_data("fsdd")
def test_augmentation_changes_speed_and_adds_noise_reproducibly():
    from training.augment import Augmentation

    samples = load_audio(DATA / "fsdd" / "recordings" / "3_theo_7.wav", 16000)
    faster = Augmentation.from_dict({"speed": [1.25, 1.25]})
    out = faster(samples, 16000, np.random.default_rng(0))
    assert abs(len(out) - len(samples) / 1.25) <= 2 and out.dtype == np.float32
    noisy = Augmentation.from_dict({"noise_snr_db": [10, 10]})
    first, again = noisy(samples, 16000, np.random.default_rng(1)), noisy(samples, 16000, np.random.default_rng(1))
    assert np.array_equal(first, again)
    snr = 10 * np.log10(np.mean(samples.astype(np.float64) ** 2) / np.mean((first - samples).astype(np.float64) ** 2))
    assert 9.5 < snr < 10.5
    assert not Augmentation.from_dict({}).active
    for bad, message in (
        ({"speed": [1.2, 0.8]}, "a range"),
        ({"speed": [0, 1]}, "above 0"),
        ({"pitch": [1, 2]}, "unknown pitch"),
        ({"noise_prob": 2}, "a probability"),
        ({"resample_prob": 0.5}, "give resample_rates"),
        ({"resample_rates": [8]}, "sampling rates"),
    ):
        with pytest.raises(ValueError, match=message):
            Augmentation.from_dict(bad)


def test_talk_is_made_of_the_talkers_at_the_noise_snr():
    """Talk noise: the given speech (here a 1 kHz tone), at noise_snr_db (not babble's range); without
    talkers, pink noise."""
    from training.augment import Augmentation

    rate = 16000
    generator = np.random.default_rng(3)
    samples = (0.1 * generator.standard_normal(rate)).astype(np.float32)
    tone = np.sin(2 * np.pi * 1000 * np.arange(rate // 2) / rate).astype(np.float32)
    talk = Augmentation.from_dict({"noise_snr_db": [10, 10], "noise_kinds": ["talk"], "babble_snr_db": [40, 40]})
    added = talk(samples, rate, np.random.default_rng(0), [], [tone]) - samples
    snr = 10 * np.log10(np.mean(samples.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2))
    assert 9.5 < snr < 10.5
    assert _band_energy(added, 950, 1050) > 0.9 * _band_energy(added, 0, 8000), "the talker's tone"
    pink = talk(samples, rate, np.random.default_rng(0)) - samples
    assert _band_energy(pink, 950, 1050) < 0.1 * _band_energy(pink, 0, 8000)


def test_microphone_response_shapes_the_spectrum_at_the_same_level():
    """mic_db: gains at points from 100 Hz to the Nyquist frequency (here -10 dB rising to +10 dB), the
    RMS level kept; only drawn when mic_prob is above 0, so other settings draw as they did."""
    from training.augment import MIC_POINTS, Augmentation, microphone

    rate = 16000
    time = np.arange(rate) / rate
    tones = (0.1 * np.sin(2 * np.pi * 150 * time) + 0.1 * np.sin(2 * np.pi * 6000 * time)).astype(np.float32)
    rising = microphone(tones, rate, np.linspace(-10, 10, MIC_POINTS))
    assert len(rising) == len(tones) and rising.dtype == np.float32
    assert (
        abs(np.sqrt(np.mean(rising.astype(np.float64) ** 2)) / np.sqrt(np.mean(tones.astype(np.float64) ** 2)) - 1)
        < 1e-3
    )
    before = _band_energy(tones, 5900, 6100) / _band_energy(tones, 100, 200)
    after = _band_energy(rising, 5900, 6100) / _band_energy(rising, 100, 200)
    assert 10 * np.log10(after / before) > 15, "high tone raised against the low one by most of 20 dB"
    assert np.allclose(microphone(tones, rate, np.zeros(MIC_POINTS)), tones, atol=1e-5), "flat: unchanged"

    noisy = {"noise_snr_db": [20, 20], "noise_kinds": ["white"]}
    plain = Augmentation.from_dict(noisy)(tones, rate, np.random.default_rng(4))
    assert np.array_equal(
        plain, Augmentation.from_dict({**noisy, "mic_prob": 0})(tones, rate, np.random.default_rng(4))
    )
    mic = Augmentation.from_dict({**noisy, "mic_prob": 1, "mic_db": [-12, 12]})
    assert mic.active and Augmentation.from_dict({"mic_prob": 1}).active
    shaped = mic(tones, rate, np.random.default_rng(4))
    assert np.array_equal(shaped, mic(tones, rate, np.random.default_rng(4))), "reproducible"
    assert not np.allclose(shaped, plain, atol=1e-3)
    for bad, message in (({"mic_db": [10, -10]}, "a range"), ({"mic_prob": 1.5}, "a probability")):
        with pytest.raises(ValueError, match=message):
            Augmentation.from_dict(bad)


def _band_energy(samples: np.ndarray, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64))) ** 2
    frequencies = np.fft.rfftfreq(len(samples), 1 / 16000)
    return float(spectrum[(frequencies >= low) & (frequencies < high)].sum())


@needs_data("fsdd")
def test_augmentation_band_limits_resamples_and_changes_volume():
    from training.augment import Augmentation

    samples = load_audio(DATA / "fsdd" / "recordings" / "3_theo_7.wav", 16000)
    noise = np.random.default_rng(0).standard_normal(len(samples)).astype(np.float32) * 0.05
    wide = samples + noise  # energy everywhere up to 8 kHz
    telephone = Augmentation.from_dict({"band_prob": 1.0})(wide, 16000, np.random.default_rng(0))
    # At least 30 dB down outside the band (the filter works on a zero-padded FFT, so a little leaks).
    assert _band_energy(telephone, 3500, 8000) < 1e-3 * _band_energy(wide, 3500, 8000)
    assert _band_energy(telephone, 0, 250) < 1e-3 * _band_energy(wide, 0, 250)
    assert _band_energy(telephone, 500, 3000) > 0.9 * _band_energy(wide, 500, 3000)
    eight_khz = Augmentation.from_dict({"resample_rates": [8000], "resample_prob": 1.0})(
        wide, 16000, np.random.default_rng(0)
    )
    assert len(eight_khz) == len(wide) and _band_energy(eight_khz, 4100, 8000) < 0.01 * _band_energy(wide, 4100, 8000)
    never = Augmentation.from_dict({"resample_rates": [8000], "resample_prob": 0.0})
    assert not never.active and np.array_equal(never(wide, 16000, np.random.default_rng(0)), wide)
    louder = Augmentation.from_dict({"volume_db": [6, 6]})(samples, 16000, np.random.default_rng(0))
    assert np.allclose(louder, np.clip(samples * 10**0.3, -1, 1), atol=1e-6)
    some_noise = Augmentation.from_dict({"noise_snr_db": [10, 10], "noise_prob": 0.5})
    changed = [
        not np.array_equal(some_noise(samples, 16000, np.random.default_rng(seed)), samples) for seed in range(40)
    ]
    assert 8 < sum(changed) < 32, "noise on about half of the utterances"


@needs_data("fsdd")
def test_connect_joins_one_speakers_recordings_with_pauses(tmp_path):
    recordings = DATA / "fsdd" / "recordings"
    names = ["1_theo_0.wav", "2_theo_0.wav", "3_theo_0.wav", "4_jackson_0.wav", "5_jackson_0.wav"]
    manifest = tmp_path / "single.jsonl"
    write_manifest(
        [Entry(recordings / name, 0.5, ["one", "two", "three", "four", "five"][i]) for i, name in enumerate(names)],
        manifest,
    )
    out = tmp_path / "connected"
    arguments = (
        "connect",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--speaker",
        "^[0-9]+_([a-z]+)_",
        "--count",
        "6",
        "--items",
        "2",
        "3",
        "--pause",
        "0.1",
        "0.2",
        "--seed",
        "4",
    )
    result = training(*arguments)
    assert result.returncode == 0, result.stderr
    entries = read_manifest(out / "manifest.jsonl")
    theo, jackson = {"one", "two", "three"}, {"four", "five"}
    lengths = {name: len(load_audio(recordings / name, 16000)) for name in names}
    for entry in entries:
        words = entry.text.split()
        assert 2 <= len(words) <= 3 and (set(words) <= theo or set(words) <= jackson), "one speaker per string"
        samples, rate = soundfile.read(entry.audio)
        spoken = sum(lengths[names[["one", "two", "three", "four", "five"].index(word)]] for word in words)
        pauses = (len(samples) - spoken) / rate
        assert rate == 16000 and 0.1 * (len(words) + 1) - 0.01 <= pauses <= 0.2 * (len(words) + 1) + 0.01
    assert {entry.text.split()[0] in theo for entry in entries} == {True, False}, "speakers take turns"
    again = training(*arguments[:4], str(tmp_path / "again"), *arguments[5:])
    assert again.returncode == 0 and [e.text for e in read_manifest(tmp_path / "again" / "manifest.jsonl")] == [
        e.text for e in entries
    ], "the seed fixes the set"
    bad = training("connect", "--manifest", str(manifest), "--out", str(out), "--speaker", "^[0-9]+_")
    assert bad.returncode == 1 and "needs a group naming the speaker" in bad.stderr


def test_finetuning_feeds_the_model_what_transcription_feeds_it(digits, tmp_path):
    """From a checkpoint that does not normalise its input (as fairseq's base models): fine-tuning
    trains on exactly the inputs `python -m model transcribe` gives the model, and saves that setting."""
    from model.__main__ import main as model_cli
    from model.config import FeatureSettings
    from model.pytorch.wav2vec2 import Wav2Vec2Model
    from training.config import FinetuneConfig
    from training.finetune import finetune

    from conftest import save_tiny_hf_model

    start = save_tiny_hf_model(tmp_path / "start", "base")
    FeatureSettings(sampling_rate=16000, do_normalize=False).save(start)
    entry = read_manifest(digits)[3]
    one = tmp_path / "one.jsonl"
    write_manifest([entry], one)
    inputs: list[np.ndarray] = []

    def record(module, arguments):
        if isinstance(module, Wav2Vec2Model):
            inputs.append(arguments[0].detach().numpy().copy())

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        out = finetune(
            FinetuneConfig(
                train_manifest=str(one),
                init=str(start),
                output_dir=str(tmp_path / "ft"),
                max_steps=1,
                freeze_transformer_steps=1,
                mask_time_prob=0.0,
                mask_channel_prob=0.0,
                save_every=1,
                log_every=1,
            )
        )
        (trained,) = inputs
        inputs.clear()
        assert model_cli(["transcribe", "--model", str(out), str(entry.audio)]) == 0
        (transcribed,) = inputs
    finally:
        hook.remove()
    assert np.array_equal(trained, transcribed)
    assert np.array_equal(trained[0], load_audio(entry.audio, 16000)), "not normalised, as the checkpoint says"
    assert not json.loads((out / "preprocessor_config.json").read_text())["do_normalize"]


@needs_data("fsdd")
def test_augmentation_pads_reverberates_and_mixes_noise_of_each_kind():
    from training.augment import NOISE_KINDS, Augmentation, make_noise

    samples = load_audio(DATA / "fsdd" / "recordings" / "3_theo_7.wav", 16000)
    padded = Augmentation.from_dict({"pad_seconds": [0.5, 0.5], "pad_prob": 1.0})(
        samples, 16000, np.random.default_rng(0)
    )
    assert len(padded) == len(samples) + 16000 and not padded[:7900].any() and not padded[-7900:].any()
    room = Augmentation.from_dict({"reverb_seconds": [0.6, 0.6], "reverb_prob": 1.0})
    wet = room(samples, 16000, np.random.default_rng(0))
    assert len(wet) == len(samples) and not np.allclose(wet, samples, atol=1e-3)
    assert (
        abs(np.sqrt(np.mean(wet.astype(np.float64) ** 2)) / np.sqrt(np.mean(samples.astype(np.float64) ** 2)) - 1)
        < 0.01
    )
    generator = np.random.default_rng(0)
    for kind in NOISE_KINDS:
        noise = make_noise(kind, 16000, 16000, generator, [samples])
        assert len(noise) == 16000 and abs(np.mean(noise**2) - 1) < 1e-6, kind
    low = {
        kind: _band_energy(make_noise(kind, 32000, 16000, np.random.default_rng(1)), 0, 500)
        / _band_energy(make_noise(kind, 32000, 16000, np.random.default_rng(1)), 0, 8000)
        for kind in ("white", "pink", "brown")
    }
    assert low["white"] < low["pink"] < low["brown"], "pink and brown noise have more low-frequency power"
    # Noise fills the padding too, at the SNR of the speech itself.
    both = Augmentation.from_dict(
        {"pad_seconds": [1, 1], "pad_prob": 1, "noise_snr_db": [20, 20], "noise_kinds": ["pink"]}
    )(samples, 16000, np.random.default_rng(2))
    floor = np.mean(both[:15000].astype(np.float64) ** 2)
    assert 15 < 10 * np.log10(np.mean(samples.astype(np.float64) ** 2) / floor) < 25
    with pytest.raises(ValueError, match="a list of white"):
        Augmentation.from_dict({"noise_kinds": ["thunder"]})


def test_empty_transcripts_train_as_audio_with_nothing_to_say(tmp_path):
    """Entries with text "" (noise, speech outside the vocabulary) are kept for training; entries
    without text (unlabelled) are not."""
    from model.config import Wav2Vec2Config
    from model.ctc import CTCVocabulary
    from training.ctc_model import examples as usable_examples

    vocab = CTCVocabulary.from_texts(["one two"])
    entries = [
        Entry(tmp_path / "a.wav", 1.0, ""),
        Entry(tmp_path / "b.wav", 1.0, "one"),
        Entry(tmp_path / "c.wav", 1.0, None),
    ]
    examples = usable_examples(entries, vocab, Wav2Vec2Config(), 16000, 30.0, report=False)
    assert [(example.text, example.targets) for example in examples][0] == ("", [])
    assert len(examples) == 2

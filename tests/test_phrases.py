"""Beam search restricted to a list of phrases, and its n best transcripts: exact by construction,
checked on the shipped digits model with real recordings, on many random logit matrices, and
against hostile lists."""

from __future__ import annotations

import json

import numpy as np
import pytest

from model.audio import load_audio
from model.ctc import CTCVocabulary
from model.decoding import BeamOptions, BeamSearchDecoder, check_phrases
from model.onnx import OnnxRecognizer
from model.package import DEFAULT_MODEL, package_lm, package_onnx
from model.phrases import MAX_PHRASE_CHARACTERS, MAX_PHRASES, PhraseError, PhraseGrammar

from conftest import DATA, REPO, VOCAB, needs_data

pytestmark = pytest.mark.fast  # the fast tier: `make test-fast`

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
EXAMPLE = REPO / "examples" / "four-one-five-zero-two.wav"


@pytest.fixture(scope="module")
def digits_model():
    recognizer = OnnxRecognizer(package_onnx(DEFAULT_MODEL))
    return recognizer, BeamSearchDecoder(recognizer.vocab, package_lm(DEFAULT_MODEL))


def logits_of(recognizer, path) -> np.ndarray:
    return recognizer.logits([load_audio(path, recognizer.sampling_rate)])[0]


# -- the grammar itself ----------------------------------------------------------------------------------


def test_grammar_accepts_sequences_of_whole_phrases_only():
    grammar = PhraseGrammar(("new york", "new", "york city", "boston"))
    for text in ("", "new", "new york", "new york city", "york city boston new", "boston boston"):
        assert grammar.accepts(text), text
    for text in ("york", "city", "new city", "boston york", "newyork", "new york york"):
        assert not grammar.accepts(text), text
    assert grammar.score_partial_token("bos") == 0 and grammar.score_partial_token("bx") == -np.inf


def test_phrases_are_normalised_to_the_models_alphabet():
    upper_case = CTCVocabulary(dict(enumerate(VOCAB)))  # the tests' models: upper-case English
    assert check_phrases(upper_case, ["  yes ", "New   York", "yes"]) == ("YES", "NEW YORK")
    assert check_phrases(CTCVocabulary.english(), ["Four ONE", "don't"]) == ("four one", "don't")


@pytest.mark.parametrize(
    "phrases, words",
    [
        ([], "at least one"),
        (["yes", "   "], "empty phrase"),
        (["café"], "'é'"),
        (["one, two"], "','"),
        (["4"], "'4'"),
        (["x" * (MAX_PHRASE_CHARACTERS + 1)], f"at most {MAX_PHRASE_CHARACTERS}"),
        (["yes"] * (MAX_PHRASES + 1), f"at most {MAX_PHRASES}"),
    ],
)
def test_phrases_the_model_cannot_write_are_refused(phrases, words):
    with pytest.raises(PhraseError, match=words):
        check_phrases(CTCVocabulary.english(), phrases)


# -- exactness: nothing outside the phrases, whatever the logits ----------------------------------------------


def test_random_logits_never_give_a_word_outside_the_phrases():
    """Sharp and flat random logits, single words and multi-word phrases that share words: every
    transcript and every alternative is a sequence of whole phrases."""
    vocab = CTCVocabulary.english()
    decoder = BeamSearchDecoder(vocab)
    generator = np.random.default_rng(0)
    lists = [DIGITS, ("yes", "no"), ("new york", "new", "york city", "boston"), ("a",), ("zero one", "one zero")]
    found = 0
    for trial in range(40):
        phrases = lists[trial % len(lists)]
        logits = generator.standard_normal((int(generator.integers(5, 120)), len(vocab))).astype(np.float32)
        logits *= [0.5, 3.0, 8.0][trial % 3]
        hotwords = ("boston", "xylophone") if trial % 4 == 0 else ()
        decoded = decoder.decode(
            logits, 0.02, BeamOptions(beam_width=16, hotwords=hotwords, alternatives=10, phrases=phrases)
        )
        grammar = PhraseGrammar(phrases)
        assert grammar.accepts(decoded.text), (phrases, decoded.text)
        assert [word.word for word in decoded.words] == decoded.text.split()
        assert all(grammar.accepts(alternative.text) for alternative in decoded.alternatives)
        found += bool(decoded.text)
    assert found >= 20, "the restricted search finds transcripts, not only empty ones"


def test_logits_that_spell_a_word_outside_the_list_give_the_closest_allowed_words():
    vocab = CTCVocabulary.english()
    text = "one two three"
    frames = []
    for char in text:
        frames += [vocab.ids["|" if char == " " else char]] * 2 + [vocab.blank_id] * 2
    logits = np.full((len(frames), len(vocab)), -5.0, dtype=np.float32)
    logits[np.arange(len(frames)), frames] = 5.0
    logits[:, vocab.blank_id] = np.maximum(logits[:, vocab.blank_id], 0.0)  # blank a close second, as in real models
    decoder = BeamSearchDecoder(vocab)
    assert decoder.decode(logits, 0.02, BeamOptions(phrases=DIGITS)).text == "one two three"
    assert decoder.decode(logits, 0.02, BeamOptions(phrases=("one", "three"))).text == "one three"
    assert decoder.decode(logits, 0.02, BeamOptions(phrases=("one two", "three"))).text == "one two three"
    assert decoder.decode(logits, 0.02, BeamOptions(phrases=("two three",))).text == "two three"


# -- the shipped digits model on real recordings -------------------------------------------------------------


def test_digits_model_with_phrases_on_real_speech(digits_model):
    recognizer, decoder = digits_model
    logits = logits_of(recognizer, EXAMPLE)  # "four one five zero two"
    frame = recognizer.frame_seconds
    assert decoder.decode(logits, frame).text == "four one five zero two"
    assert decoder.decode(logits, frame, BeamOptions(phrases=DIGITS)).text == "four one five zero two"
    assert (
        decoder.decode(logits, frame, BeamOptions(phrases=("four one", "five zero two"))).text
        == "four one five zero two"
    )
    for phrases in (("one", "two", "three", "four", "five"), ("yes", "no"), ("four one five",), ("zero two", "nine")):
        text = decoder.decode(logits, frame, BeamOptions(phrases=phrases, alternatives=5)).text
        assert PhraseGrammar(phrases).accepts(text), (phrases, text)
        assert "zero" not in text.split() or "zero" in " ".join(phrases)


@needs_data("fsdd")
def test_digits_model_restricted_to_the_digits_is_right_on_fsdd(digits_model):
    """Thirty of FSDD's test recordings: restricted to the ten digits, the output is the spoken digit
    (on one of these, 4_lucas_0, the open LM search says "oh"; the restriction mends it), and
    restricting it to other words never lets a digit through."""
    recognizer, decoder = digits_model
    paths = sorted((DATA / "fsdd" / "recordings").glob("*_[0-4].wav"))[::10][:30]
    assert len(paths) == 30
    frame = recognizer.frame_seconds
    for path in paths:
        logits = logits_of(recognizer, path)
        spoken = DIGITS[int(path.name.split("_")[0])]
        assert decoder.decode(logits, frame, BeamOptions(phrases=DIGITS)).text == spoken, path.name
        other = decoder.decode(logits, frame, BeamOptions(phrases=("yes", "no", "operator"), alternatives=3))
        assert set(other.text.split()) <= {"yes", "no", "operator"}, path.name


# -- n best -----------------------------------------------------------------------------------------------


@needs_data("fsdd")
def test_alternatives_are_distinct_best_first_and_the_first_is_the_text(digits_model):
    recognizer, decoder = digits_model
    for path in (EXAMPLE, *sorted((DATA / "fsdd" / "recordings").glob("3_*_1.wav"))[:3]):
        logits = logits_of(recognizer, path)
        decoded = decoder.decode(logits, recognizer.frame_seconds, BeamOptions(alternatives=10))
        texts = [alternative.text for alternative in decoded.alternatives]
        scores = [alternative.score for alternative in decoded.alternatives]
        assert 1 <= len(texts) <= 10 and len(set(texts)) == len(texts)
        assert texts[0] == decoded.text and scores == sorted(scores, reverse=True)
        assert decoder.decode(logits, recognizer.frame_seconds).alternatives == [], "none unless asked"
        three = decoder.decode(logits, recognizer.frame_seconds, BeamOptions(alternatives=3)).alternatives
        assert three == decoded.alternatives[:3]


# -- the command line ----------------------------------------------------------------------------------------


def test_the_command_line_takes_phrases_and_alternatives(capsys):
    from model.__main__ import main

    onnx = str(package_onnx(DEFAULT_MODEL))
    assert (
        main(
            [
                "transcribe",
                "--model",
                onnx,
                "--json",
                "--alternatives",
                "3",
                "--phrases",
                "four one,five,zero two",
                str(EXAMPLE),
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["text"] == "four one five zero two" and result["decoder"] == "beam"
    assert result["alternatives"][0]["text"] == result["text"]
    assert all(PhraseGrammar(("four one", "five", "zero two")).accepts(item["text"]) for item in result["alternatives"])
    assert main(["transcribe", "--model", onnx, "--phrases", "yes,no", str(EXAMPLE)]) == 0
    assert set(capsys.readouterr().out.split("\t")[1].split()) <= {"yes", "no"}
    assert main(["transcribe", "--model", onnx, "--phrases", "café", str(EXAMPLE)]) == 1
    assert "'é'" in capsys.readouterr().err

"""Beam search within a model's lexicon (flashlight-text, with real KenLM) and the confidence every
decoder gives its words: exact cases on constructed logits, and lexicon files and the words a model
cannot write refused with a clear error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from model.ctc import CTCVocabulary, best_alignment
from model.decoding import (
    BeamOptions,
    BeamSearchDecoder,
    Decoded,
    DecoderStartError,
    Word,
    check_lexicon,
    greedy_decode,
)
from model.lexicon import LexiconError, read_lexicon
from model.package import DEFAULT_MODEL, package_lexicon
from model.phrases import PhraseError

from conftest import HANG_SECONDS, REPO, write_arpa

pytestmark = pytest.mark.fast  # the fast tier: `make test-fast`

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "oh")
FRAME = 0.02


def spelling(vocab: CTCVocabulary, text: str, heard_too: str = "") -> np.ndarray:
    """Logits whose best path spells `text`: each character for two frames, then two blank frames, the
    blank a close second throughout (as in real models). The characters of `heard_too` are runners-up
    throughout, below the blank: flashlight's search extends a beam by a frame's likeliest tokens only
    (`model.lexicon.TOKENS_PER_FRAME`), as pyctcdecode skips unlikely ones."""
    frames = []
    for char in text:
        frames += [vocab.ids["|" if char == " " else char]] * 2 + [vocab.blank_id] * 2
    logits = np.full((len(frames), len(vocab)), -5.0, dtype=np.float32)
    for char in heard_too:
        logits[:, vocab.ids["|" if char == " " else char]] = -1.0
    logits[np.arange(len(frames)), frames] = 5.0
    logits[:, vocab.blank_id] = np.maximum(logits[:, vocab.blank_id], 0.0)
    return logits


@pytest.fixture(scope="module")
def digits_lm(tmp_path_factory):
    strings = [" ".join(DIGITS[(start + step * 3) % 10] for step in range(4)) for start in range(10)]
    return write_arpa(strings, tmp_path_factory.mktemp("lm") / "digits.arpa")


def test_the_shipped_model_declares_its_eleven_words():
    assert read_lexicon(package_lexicon(DEFAULT_MODEL)) == DIGITS


def test_a_lexicon_search_writes_only_its_words(digits_lm):
    """A misspelling the acoustic model prefers ("fovur", "sevetwo") comes out as the lexicon's words,
    with and without a language model; the lexicon-free search keeps the misspelling."""
    vocab = CTCVocabulary.english()
    logits = spelling(vocab, "fovur one sevetwo", heard_too="n ")
    assert greedy_decode(vocab, logits, FRAME).text == "fovur one sevetwo"
    assert BeamSearchDecoder(vocab).decode(logits, FRAME).text == "fovur one sevetwo"
    for lm in (None, digits_lm):
        decoded = BeamSearchDecoder(vocab, lm, lexicon=DIGITS).decode(logits, FRAME)
        assert decoded.text == "four one seven two", lm
        assert [word.word for word in decoded.words] == decoded.text.split()
        assert all(0 <= word.start < word.end <= len(logits) * FRAME for word in decoded.words)


def test_confidence_is_low_where_the_search_overrules_the_audio(digits_lm):
    """The words the audio spells score near 1 by every decoder; a word the lexicon forced on letters
    the model did not hear ("fxxr" -> "four") scores lower, and the transcript scores as its weakest word."""
    vocab = CTCVocabulary.english()
    clean = spelling(vocab, "one two three")
    for decoded in (
        greedy_decode(vocab, clean, FRAME),
        BeamSearchDecoder(vocab, digits_lm).decode(clean, FRAME),
        BeamSearchDecoder(vocab, digits_lm, lexicon=DIGITS).decode(clean, FRAME),
    ):
        assert decoded.text == "one two three"
        assert all(word.confidence > 0.9 for word in decoded.words)
        assert decoded.confidence == min(word.confidence for word in decoded.words)
    forced = BeamSearchDecoder(vocab, digits_lm, lexicon=DIGITS).decode(spelling(vocab, "fxxr one", "ou"), FRAME)
    assert forced.text == "four one"
    assert forced.words[0].confidence < 0.75 < forced.words[1].confidence
    assert forced.confidence == forced.words[0].confidence
    assert greedy_decode(vocab, spelling(vocab, "fxxr one", "ou"), FRAME).confidence > 0.9, "greedy: what it heard"


def test_greedy_confidence_is_the_mean_best_token_probability():
    vocab = CTCVocabulary.english()
    logits = np.random.default_rng(0).normal(size=(60, len(vocab))).astype(np.float32) * 3
    decoded = greedy_decode(vocab, logits, FRAME)
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    best = (probabilities / probabilities.sum(-1, keepdims=True)).max(-1)
    assert decoded.words
    for word in decoded.words:
        frames = slice(round(word.start / FRAME), round(word.end / FRAME))
        assert word.confidence == pytest.approx(best[frames].mean(), abs=1e-4)


def test_marks_and_the_empty_transcript():
    decoded = Decoded("four two", [Word("four", 0.1, 0.2, 0.9), Word("two", 0.3, 0.4, 0.6)]).mark(0.75)
    assert [word.low_confidence for word in decoded.words] == [False, True] and decoded.confidence == 0.6
    assert Decoded("", []).confidence == 0.0, "nothing recognised: no confidence in any word"


def test_best_alignment_spells_the_tokens():
    """The Viterbi path collapses to the tokens (repeats with a blank between) and is the most probable
    such path: no single-frame change that still spells them scores higher."""
    generator = np.random.default_rng(1)
    for tokens in ([3, 4, 3], [2, 2], [5], [1, 2, 3, 4]):
        log_probs = np.log(generator.dirichlet(np.ones(6), size=12))
        path = best_alignment(log_probs, tokens, blank=0)
        collapsed = [
            int(token) for index, token in enumerate(path) if token != 0 and (index == 0 or token != path[index - 1])
        ]
        assert collapsed == tokens
        score = log_probs[np.arange(12), path].sum()
        for frame in range(12):
            for token in range(6):
                other = path.copy()
                other[frame] = token
                spelled = [int(t) for i, t in enumerate(other) if t != 0 and (i == 0 or t != other[i - 1])]
                if spelled == tokens:
                    assert log_probs[np.arange(12), other].sum() <= score + 1e-9


def test_hotwords_and_phrases_search_outside_the_lexicon(digits_lm):
    vocab = CTCVocabulary.english()
    logits = spelling(vocab, "fovur one")
    decoder = BeamSearchDecoder(vocab, digits_lm, lexicon=DIGITS)
    assert decoder.decode(logits, FRAME).text == "four one"
    assert decoder.decode(logits, FRAME, BeamOptions(phrases=("fovur one", "two"))).text == "fovur one"
    assert decoder.decode(logits, FRAME, BeamOptions(hotwords=("fovur",))).text.split()[0] == "fovur"


def test_alternatives_within_the_lexicon_are_distinct_and_best_first(digits_lm):
    vocab = CTCVocabulary.english()
    decoder = BeamSearchDecoder(vocab, digits_lm, lexicon=DIGITS)
    logits = np.random.default_rng(0).normal(size=(80, len(vocab))).astype(np.float32) * 2  # much in doubt
    decoded = decoder.decode(logits, FRAME, BeamOptions(alternatives=5))
    texts = [alternative.text for alternative in decoded.alternatives]
    scores = [alternative.score for alternative in decoded.alternatives]
    assert texts[0] == decoded.text and len(set(texts)) == len(texts) == 5
    assert scores == sorted(scores, reverse=True)
    assert all(set(text.split()) <= set(DIGITS) for text in texts)


def test_lexicons_the_model_cannot_write_are_refused(tmp_path):
    vocab = CTCVocabulary.english()
    assert check_lexicon(vocab, ["Four", " one "]) == ("four", "one"), "in the model's letter case"
    with pytest.raises(PhraseError, match="'é'"):
        check_lexicon(vocab, ["four", "café"])
    with pytest.raises(PhraseError, match="single words"):
        check_lexicon(vocab, ["four", "twenty one"])
    with pytest.raises(DecoderStartError, match="'é'"):
        BeamSearchDecoder(vocab, lexicon=("café",))
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(LexiconError, match="lists no word"):
        read_lexicon(tmp_path / "empty.txt")
    with pytest.raises(LexiconError, match="missing.txt"):
        read_lexicon(tmp_path / "missing.txt")
    (tmp_path / "words.txt").write_text("# digits\nfour\none 1\n\nfour\n")
    assert read_lexicon(tmp_path / "words.txt") == ("four", "one")


def test_the_server_refuses_a_bad_lexicon_or_threshold_at_start(tmp_path):
    """The default model with a lexicon of a word its alphabet lacks, or of no file: one line, exit 1."""
    (tmp_path / "words.txt").write_text("four\ncafé\n")
    for lexicon, reason in ((tmp_path / "words.txt", "'é'"), (tmp_path / "none.txt", "not found")):
        result = subprocess.run(
            [sys.executable, "-m", "service", "--lexicon", str(lexicon)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=HANG_SECONDS,
        )
        error = result.stderr.strip().splitlines()[-1]  # after what KenLM prints as it loads
        assert result.returncode == 1 and error.startswith("error: model 'digits': ") and reason in error, error
    result = subprocess.run(
        [sys.executable, "-m", "service", "--min-confidence", "1.5"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
    )
    assert result.returncode == 2 and "--min-confidence" in result.stderr

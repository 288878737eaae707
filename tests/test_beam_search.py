"""The two beam searches, pyctcdecode and flashlight-text (within a lexicon or a language model's
words, or lexicon-free), as an explicit choice and by the documented rule: each one's words and
times on the shipped digits model's real recording, n-best, phrases, hotwords refused by flashlight
(core, CLI and server), and the search that ran named in the server's answer and metrics."""

from __future__ import annotations

import subprocess
import sys

import httpx
import numpy as np
import pytest

from model.audio import load_audio
from model.ctc import CTCVocabulary
from model.decoding import BeamOptions, BeamSearchDecoder, SearchUnavailable, choose_search
from model.lexicon import LexiconError, arpa_words, read_lexicon
from model.onnx import OnnxRecognizer
from model.options import DecodeOptions, OptionError, check_options, from_values
from model.package import DEFAULT_MODEL, package_lexicon, package_lm, package_onnx

from conftest import HANG_SECONDS, REPO, metric, run_server, write_arpa

pytestmark = pytest.mark.fast  # the fast tier: `make test-fast`

EXAMPLE = REPO / "examples" / "four-one-five-zero-two.wav"
SPOKEN = "four one five zero two"


@pytest.fixture(scope="module")
def digits():
    """The shipped model's logits of the example, and its decoders: with its LM and lexicon, with its
    LM alone (flashlight within the LM's words), and with neither (flashlight lexicon-free)."""
    recognizer = OnnxRecognizer(package_onnx(DEFAULT_MODEL))
    logits = recognizer.logits([load_audio(EXAMPLE, recognizer.sampling_rate)])[0]
    lm, lexicon = package_lm(DEFAULT_MODEL), read_lexicon(package_lexicon(DEFAULT_MODEL))
    decoders = {
        "lexicon": BeamSearchDecoder(recognizer.vocab, lm, lexicon=lexicon),
        "lm words": BeamSearchDecoder(recognizer.vocab, lm),
        "no lm": BeamSearchDecoder(recognizer.vocab),
    }
    return recognizer, logits, decoders


def test_each_search_gives_the_words_and_their_times(digits):
    """Every search and resource hears the recording's five digits, in order, each timed inside the
    audio after the one before; flashlight's times (from its token path) agree with pyctcdecode's
    (from its word frames) within two frames."""
    recognizer, logits, decoders = digits
    seconds = len(logits) * recognizer.frame_seconds
    timings = {}
    for resource, decoder in decoders.items():
        for search in ("pyctcdecode", "flashlight"):
            decoded = decoder.decode(logits, recognizer.frame_seconds, BeamOptions(beam_search=search))
            assert decoded.text == SPOKEN and decoded.search == search, (resource, search)
            assert [word.word for word in decoded.words] == SPOKEN.split()
            starts = [word.start for word in decoded.words]
            assert starts == sorted(starts) and all(0 <= w.start < w.end <= seconds for w in decoded.words)
            assert all(word.confidence > 0.5 for word in decoded.words)
            timings[resource, search] = np.array([(word.start, word.end) for word in decoded.words])
    for resource in decoders:
        gap = np.abs(timings[resource, "flashlight"] - timings[resource, "pyctcdecode"]).max()
        assert gap <= 2 * recognizer.frame_seconds + 1e-6, resource


def test_the_default_search_follows_the_rule(digits):
    """auto: flashlight when the decoder has words (a lexicon, or a word LM's), pyctcdecode for
    hotwords, phrases, or no words at all; an explicit choice always wins."""
    recognizer, logits, decoders = digits
    for has_words in (True, False):
        assert choose_search(BeamOptions(beam_search="pyctcdecode"), has_words) == "pyctcdecode"
        assert choose_search(BeamOptions(beam_search="flashlight"), has_words) == "flashlight"
        assert choose_search(BeamOptions(hotwords=("four",)), has_words) == "pyctcdecode"
        assert choose_search(BeamOptions(phrases=("four one",)), has_words) == "pyctcdecode"
    assert choose_search(BeamOptions(), True) == "flashlight"
    assert choose_search(BeamOptions(), False) == "pyctcdecode"
    frame = recognizer.frame_seconds
    ran = {resource: decoder.decode(logits, frame).search for resource, decoder in decoders.items()}
    assert ran == {"lexicon": "flashlight", "lm words": "flashlight", "no lm": "pyctcdecode"}
    assert decoders["lexicon"].decode(logits, frame, BeamOptions(hotwords=("nine",))).search == "pyctcdecode"


def test_n_best_is_honoured_by_each_search(digits):
    """The n best distinct transcripts, best first. On the model's own, very peaky logits no second
    transcript comes within reach of the best: softened (a third of each logit) several do."""
    recognizer, logits, decoders = digits
    for search in ("pyctcdecode", "flashlight"):
        for count in (1, 3):
            options = BeamOptions(alternatives=count, beam_search=search)
            decoded = decoders["lm words"].decode(logits / 3, recognizer.frame_seconds, options)
            texts = [alternative.text for alternative in decoded.alternatives]
            assert len(texts) == count and len(set(texts)) == count, (search, texts)
            assert texts[0] == decoded.text == SPOKEN
            scores = [alternative.score for alternative in decoded.alternatives]
            assert scores == sorted(scores, reverse=True)


def test_flashlight_keeps_to_the_phrases(digits):
    """Phrases are flashlight's lexicon entries: the transcript is a sequence of whole phrases; a
    phrase list the audio cannot fit gives phrases or nothing, never another word."""
    recognizer, logits, decoders = digits
    frame = recognizer.frame_seconds
    options = BeamOptions(phrases=("four one five", "zero two", "six"), beam_search="flashlight")
    decoded = decoders["lexicon"].decode(logits, frame, options)
    assert decoded.text == SPOKEN and decoded.search == "flashlight"
    assert [word.word for word in decoded.words] == SPOKEN.split()
    assert all(0 <= word.start < word.end for word in decoded.words)
    only = decoders["no lm"].decode(logits, frame, BeamOptions(phrases=("seven eight",), beam_search="flashlight"))
    assert only.text.replace("seven eight", "").strip() == "", only.text


def test_flashlight_refuses_hotwords_everywhere(digits, tmp_path):
    recognizer, logits, decoders = digits
    asked = BeamOptions(hotwords=("nine",), beam_search="flashlight")
    with pytest.raises(SearchUnavailable, match="hotwords need beam_search=pyctcdecode"):
        decoders["lexicon"].decode(logits, recognizer.frame_seconds, asked)
    with pytest.raises(OptionError, match="flashlight's search has no hotwords") as refused:
        check_options(DecodeOptions(beam=asked), recognizer.vocab, has_lm=True)
    assert refused.value.field == "hotwords"
    with pytest.raises(OptionError, match="greedy decoding runs none"):
        check_options(from_values({"decoder": "greedy", "beam_search": "flashlight"}), recognizer.vocab, True)
    with pytest.raises(OptionError, match="beam_search must be one of auto, pyctcdecode, flashlight"):
        from_values({"beam_search": "viterbi"})
    command = [sys.executable, "-m", "model", "transcribe", "--model", str(DEFAULT_MODEL), str(EXAMPLE)]
    refused = subprocess.run(
        [*command, "--beam-search", "flashlight", "--hotwords", "nine"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
    )
    assert refused.returncode != 0 and "flashlight's search has no hotwords" in refused.stderr, refused.stderr
    answered = subprocess.run(
        [*command, "--beam-search", "pyctcdecode", "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=HANG_SECONDS,
    )
    assert answered.returncode == 0, answered.stderr
    assert '"beam_search": "pyctcdecode"' in answered.stdout and SPOKEN in answered.stdout


def test_a_language_models_words_are_its_unigrams(tmp_path):
    lm = write_arpa(["four one", "one two three"], tmp_path / "small.arpa")
    assert sorted(arpa_words(lm)) == ["four", "one", "three", "two"]
    (tmp_path / "binary.bin").write_bytes(b"mmap lm http://kheafield.com/code format version 5\n\0")
    assert arpa_words(tmp_path / "binary.bin") is None, "a binary model's words cannot be listed"
    (tmp_path / "text.txt").write_text("four one\n")
    with pytest.raises(LexiconError, match="neither an ARPA file"):
        arpa_words(tmp_path / "text.txt")


def test_an_upper_case_model_searches_a_lower_case_language_model(tmp_path):
    """The LM's words are spelt in the model's letter case, and scored under their own name: the LM
    decides between two words the acoustic model finds equally likely ("ball" is the commoner word,
    "bell" the one that follows "red")."""
    tokens = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ABCDEFGHIJKLMNOPQRSTUVWXYZ'"]
    vocab = CTCVocabulary(dict(enumerate(tokens)))
    lm = write_arpa(["the red bell"] * 3 + ["ball"] * 6 + ["a ball"] * 3, tmp_path / "lower.arpa")
    frames = []
    for char in "THE RED B?LL":
        frames.append({"?": ["E", "A"], " ": ["|"]}.get(char, [char]))
        frames.append(["<pad>"])
    logits = np.full((len(frames), len(vocab)), -8.0, dtype=np.float32)
    for index, chars in enumerate(frames):
        for char in chars:
            logits[index, vocab.ids[char]] = 5.0
    decoded = BeamSearchDecoder(vocab, lm).decode(logits, 0.02)
    assert decoded.search == "flashlight" and decoded.text == "THE RED BELL"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with run_server(DEFAULT_MODEL, "--decode-workers", "1", log_dir=tmp_path_factory.mktemp("logs")) as running:
        yield running


def test_the_server_names_the_search_that_ran(server):
    def transcribe(**fields) -> httpx.Response:
        with EXAMPLE.open("rb") as audio:
            return httpx.post(server.url + "/transcribe", files={"file": audio}, data=fields, timeout=HANG_SECONDS)

    expected = {
        (): ("beam", "flashlight"),  # the default model has a lexicon and an LM: flashlight
        (("hotwords", "nine"),): ("beam", "pyctcdecode"),
        (("beam_search", "pyctcdecode"),): ("beam", "pyctcdecode"),
        (("decoder", "greedy"),): ("greedy", None),
    }
    for fields, (decoder, search) in expected.items():
        answer = transcribe(**dict(fields))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["decoder"], body.get("beam_search"), body["text"]) == (decoder, search, SPOKEN), fields
    refused = transcribe(beam_search="flashlight", hotwords="nine")
    assert refused.status_code == 422, refused.text
    assert "flashlight's search has no hotwords" in refused.text and refused.json()["error"]["param"] == "hotwords"
    assert metric(server, "asr_decode_seconds_count", decoder="beam", search="flashlight") >= 1
    assert metric(server, "asr_decode_seconds_count", decoder="beam", search="pyctcdecode") >= 2
    assert metric(server, "asr_decode_seconds_count", decoder="greedy", search="") >= 1


def test_a_word_the_audio_cuts_short_is_left_out():
    """A lexicon beam may end inside a word (the audio stops at "seve"): only the words it completed
    are the transcript, each a word of the lexicon, never the fragment."""
    vocab = CTCVocabulary.english()
    frames = []  # each character for two frames, then two blank ones
    for char in "four|one|seve":
        frames += [vocab.ids[char]] * 2 + [vocab.blank_id] * 2
    logits = np.full((len(frames), len(vocab)), -5.0, dtype=np.float32)
    logits[np.arange(len(frames)), frames] = 5.0
    logits[:, vocab.blank_id] = np.maximum(logits[:, vocab.blank_id], 0.0)
    decoded = BeamSearchDecoder(vocab, lexicon=("four", "one", "seven")).decode(logits, 0.02)
    assert decoded.search == "flashlight" and decoded.text == "four one"
    assert [word.word for word in decoded.words] == ["four", "one"]

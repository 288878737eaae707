"""The CTC vocabulary decodes exactly as Wav2Vec2CTCTokenizer.batch_decode, and reads fairseq dictionaries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import transformers

from model.ctc import CTCVocabulary, text_log_likelihood

from conftest import VOCAB

pytestmark = pytest.mark.fast  # the fast tier: `make test-fast`


@pytest.mark.parametrize("options", [{}, {"do_lower_case": True}, {"clean_up_tokenization_spaces": True}])
def test_decoding_matches_transformers(tmp_path, options):
    (tmp_path / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(VOCAB)}))
    transformers.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), **options).save_pretrained(tmp_path)
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    vocab = CTCVocabulary.from_folder(tmp_path)
    generator = np.random.default_rng(0)
    # Frame paths with runs of repeats, many blanks and delimiters, like a model's argmax path.
    weights = np.ones(len(VOCAB))
    weights[[0, 4, 30]] = [20, 6, 4]  # blank, word delimiter, apostrophe
    paths = [
        np.repeat(generator.choice(len(VOCAB), size=40, p=weights / weights.sum()), generator.integers(1, 4, size=40))
        for _ in range(200)
    ]
    paths.append(np.array([0, 0, 0]))  # silence
    paths.append(np.array([4, 4, 0, 4, 7, 7, 0, 7, 4]))  # leading delimiters, a doubled letter
    paths.append(np.array([5, 99, 98, 6]))  # ids beyond the vocabulary decode to <unk>, once
    expected = tokenizer.batch_decode(paths)
    actual = [vocab.decode_ids(path) for path in paths]
    assert actual == expected


def test_saved_vocabulary_reloads_in_transformers(tmp_path):
    vocab = CTCVocabulary(tokens=dict(enumerate(VOCAB)), do_lower_case=True)
    vocab.save(tmp_path)
    tokenizer = transformers.Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    assert tokenizer.pad_token == "<pad>" and tokenizer.word_delimiter_token == "|"
    assert tokenizer.get_vocab() == {token: index for index, token in enumerate(VOCAB)}
    path = [7, 7, 0, 8, 4, 9, 10]
    assert tokenizer.decode(path) == vocab.decode_ids(path) == "ao ni"  # A A _ O | N I, lower-cased


def test_token_spans_give_frames():
    vocab = CTCVocabulary(tokens=dict(enumerate(VOCAB)))
    spans = vocab.token_spans([0, 5, 5, 0, 4, 6, 0, 0])
    assert [(span.token, span.start_frame, span.end_frame) for span in spans] == [("E", 1, 3), ("|", 4, 5), ("T", 5, 6)]


def test_fairseq_dictionary(tmp_path):
    (tmp_path / "dict.ltr.txt").write_text("| 100\nE 50\nT 40\n")
    vocab = CTCVocabulary.from_fairseq_dictionary(tmp_path / "dict.ltr.txt")
    assert vocab.tokens == {0: "<pad>", 1: "<s>", 2: "</s>", 3: "<unk>", 4: "|", 5: "E", 6: "T"}
    assert vocab.blank_id == 0
    assert vocab.decode_ids([5, 0, 4, 6, 6]) == "E T"


def test_vocabulary_without_blank_is_refused():
    with pytest.raises(ValueError, match="no pad token"):
        CTCVocabulary(tokens={0: "a", 1: "b"})


@pytest.mark.parametrize(
    "frames, tokens",
    [
        (30, [4, 5, 6, 5, 4]),
        (10, [4, 4, 3, 2]),
        (12, [1, 1, 2, 3, 2, 2]),
        (1, [3]),
        (20, []),
        (1, []),
        (3, [4, 1, 2, 4]),
        (3, [2, 2]),
    ],
)
def test_text_likelihood_is_ctc_loss(frames, tokens):
    """The forward algorithm of `text_log_likelihood` gives what torch's CTC loss negates, repeats
    (which need a blank between them), empty texts and texts too long for the frames included."""
    import torch

    generator = np.random.default_rng(frames * 31 + len(tokens))
    log_probs = torch.log_softmax(torch.tensor(generator.normal(size=(frames, 8)) * 2), dim=-1)
    expected = -torch.nn.functional.ctc_loss(
        log_probs[:, None],
        torch.tensor([tokens], dtype=torch.long),
        torch.tensor([frames]),
        torch.tensor([len(tokens)]),
        blank=0,
        reduction="sum",
    ).item()
    ours = text_log_likelihood(log_probs.numpy(), tokens, blank=0)
    assert ours == pytest.approx(expected, rel=1e-9, abs=1e-9) or (ours == expected == -np.inf)


def test_text_likelihood_sums_over_alignments():
    """Two frames, one token 'a': paths 'a a', 'a _', '_ a' all collapse to it."""
    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]])  # blank, a, b
    expected = 0.3 * 0.6 + 0.3 * 0.1 + 0.5 * 0.6
    assert np.exp(text_log_likelihood(np.log(probabilities), [1], blank=0)) == pytest.approx(expected)
    assert np.exp(text_log_likelihood(np.log(probabilities), [1, 1], blank=0)) == 0.0, "a repeat needs a blank between"

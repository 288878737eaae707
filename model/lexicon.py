"""Beam search within a model's words: a lexicon (the words the transcript may hold, each spelt with
the model's tokens) searched by flashlight-text's `LexiconDecoder`, the search torchaudio's
`ctc_decoder` wraps, scored with the same KenLM model and weights as pyctcdecode's lexicon-free search.

A model that knows a few words decodes better within them: every beam spells a word of the lexicon,
so a misspelling ("fovur") or two words run together ("sevetwo") cannot come out. A model folder
declares its lexicon in `lexicon.txt` (`model.package`): one word per line. Imports no torch and
nothing of the model; flashlight-text is imported when a search is built.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# Beams more than this far below the best (natural log) are dropped: torchaudio's default. On the digits
# model, 50 gives the same words at three to eight times the search time.
BEAM_THRESHOLD = 25.0


class LexiconError(ValueError):
    """A lexicon file that cannot be read, or with no word."""


def read_lexicon(path: str | Path) -> tuple[str, ...]:
    """The words of a lexicon file: one per line (a line's first field; blank lines and lines starting
    with # are skipped)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise LexiconError(f"lexicon {path}: {error}") from None
    words = tuple(dict.fromkeys(line.split()[0] for line in lines if line.strip() and not line.startswith("#")))
    if not words:
        raise LexiconError(f"lexicon {path} lists no word")
    return words


class LexiconSearch:
    """flashlight-text's lexicon-constrained CTC beam search over one lexicon and language model
    (loaded once). `spellings`: each word's token ids, without the word delimiter. `lm`: a KenLM model
    (ARPA or binary), or None to let the acoustic model alone choose among the words. `alpha` weighs
    the language model's natural-log score and `beta` is added per word, as in pyctcdecode."""

    def __init__(
        self,
        spellings: dict[str, list[int]],
        vocab_size: int,
        blank: int,
        delimiter: int,
        lm: str | Path | None,
        alpha: float,
        beta: float,
    ):
        from flashlight.lib.text.decoder import KenLM, SmearingMode, Trie, ZeroLM  # lexicon beam search
        from flashlight.lib.text.dictionary import Dictionary

        self.words = Dictionary()
        for word in [*spellings, "<unk>"]:
            self.words.add_entry(word)
        self.words.set_default_index(self.words.get_index("<unk>"))
        self.lm = KenLM(str(lm), self.words) if lm else ZeroLM()
        self.trie = Trie(vocab_size, delimiter)
        start = self.lm.start(False)
        for word, ids in spellings.items():
            index = self.words.get_index(word)
            self.trie.insert([*ids, delimiter], index, self.lm.score(start, index)[1])
        self.trie.smear(SmearingMode.MAX)  # each trie node scores the best word below it, so beams are pruned early
        self.vocab_size, self.blank, self.delimiter = vocab_size, blank, delimiter
        # KenLM scores in log10; pyctcdecode's alpha weighs natural logs.
        self.lm_weight, self.word_score = alpha * math.log(10), beta

    def search(self, log_probs: np.ndarray, beam_width: int) -> list[tuple[np.ndarray, float]]:
        """The final beams, best first: each one's path (a token id per frame, blanks and word
        delimiters included) and score. log_probs: (frames, vocab) log-softmax output."""
        from flashlight.lib.text.decoder import CriterionType, LexiconDecoder, LexiconDecoderOptions

        options = LexiconDecoderOptions(
            beam_width,
            self.vocab_size,
            BEAM_THRESHOLD,
            self.lm_weight,
            self.word_score,
            -math.inf,
            0.0,
            False,
            CriterionType.CTC,
        )
        decoder = LexiconDecoder(
            options, self.trie, self.lm, self.delimiter, self.blank, self.words.get_index("<unk>"), [], False
        )
        emissions = np.ascontiguousarray(log_probs, dtype=np.float32)
        results = decoder.decode(emissions.ctypes.data, len(emissions), emissions.shape[1])
        # Each path has one token before the first frame and one after the last: the search's start and end.
        return [(np.asarray(result.tokens[1:-1], dtype=np.int64), float(result.score)) for result in results]

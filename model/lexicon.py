"""flashlight-text's C++ CTC beam searches (the ones torchaudio's `ctc_decoder` wraps), without torch.

`LexiconSearch`: within a lexicon (the words the transcript may hold, each spelt with the model's
tokens), scored with the same KenLM model and weights as pyctcdecode's search. A model that knows a
few words decodes better within them: every beam spells a word of the lexicon, so a misspelling
("fovur") or two words run together ("sevetwo") cannot come out. A model folder declares its lexicon
in `lexicon.txt` (`model.package`): one word per line; without one, a word language model's own
words are the lexicon (`arpa_words`). An entry may also be a phrase of several words (a request's
`phrases`): its spelling then holds the word delimiter between them.

`LexiconFreeSearch`: any spelling, scored by the acoustic model alone: flashlight's lexicon-free
search scores a language model token by token, so a word model cannot drive it.

Imports no torch and nothing of the model; flashlight-text is imported when a search is built.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

# Beams more than this far below the best (natural log) are dropped: torchaudio's default. On the digits
# model, 50 gives the same words at three to eight times the search time; 10 to 15 (pyctcdecode prunes
# at 10) are faster but lost 1-2 of FSDD's 300 digits.
BEAM_THRESHOLD = 25.0
# Only a frame's likeliest tokens extend a beam (torchaudio's default: every token). On a 30k-word LM
# (bench/decoders.py) every token costs 2-3x the time at beam 100 for the same words; on the digits
# model, 8 gives the same words on FSDD and one word more wrong of digits-multi's 1,200; 4 loses more.
TOKENS_PER_FRAME = 8


class Beam(NamedTuple):
    """One of a search's final beams."""

    path: np.ndarray  # a token id per frame, blanks and word delimiters included
    score: float  # acoustic + weighted LM + word bonus (natural log); higher is better
    # Words the beam completed (lexicon search): its path may end inside a word the audio cut short,
    # which is no word of the lexicon. None: lexicon-free, every word on the path counts.
    words: int | None = None


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


# A KenLM binary file starts with this; its words cannot be listed without KenLM's C++ API.
KENLM_BINARY_MAGIC = b"mmap lm "
SENTENCE_MARKS = ("<s>", "</s>", "<unk>")


def arpa_words(path: str | Path) -> tuple[str, ...] | None:
    """The words of an ARPA language model (its 1-grams, less <s>, </s> and <unk>), in file order;
    None for a KenLM binary file. LexiconError if the file is neither."""
    try:
        with open(path, "rb") as handle:
            if handle.read(len(KENLM_BINARY_MAGIC)) == KENLM_BINARY_MAGIC:
                return None
        words, in_unigrams = [], False
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if line == "\\1-grams:":
                    in_unigrams = True
                elif in_unigrams and line.startswith("\\"):
                    break
                elif in_unigrams and line:
                    fields = line.split()
                    if len(fields) > 1 and fields[1] not in SENTENCE_MARKS:
                        words.append(fields[1])
    except (OSError, UnicodeDecodeError) as error:
        raise LexiconError(f"language model {path}: {error}") from None
    if not in_unigrams:
        raise LexiconError(f"language model {path} is neither an ARPA file (no \\1-grams: section) nor KenLM binary")
    return tuple(words)


class LexiconSearch:
    """flashlight-text's lexicon-constrained CTC beam search over one lexicon and language model
    (loaded once). `spellings`: each entry's token ids, without a final word delimiter, by the
    entry's name in the language model (its letter case may differ from the model's). `lm`: a KenLM
    model (ARPA or binary), or None to let the acoustic model alone choose among the entries. `alpha`
    weighs the language model's natural-log score and `beta` is added per entry, as in pyctcdecode."""

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
        from flashlight.lib.text.decoder import SmearingMode, Trie, ZeroLM  # lexicon beam search
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        self.words = Dictionary()
        self.entries = [*spellings, "<unk>"]
        for word in self.entries:
            self.words.add_entry(word)
        self.words.set_default_index(self.words.get_index("<unk>"))
        self.lm = KenLM(str(lm), self.words) if lm else ZeroLM()
        self.trie = Trie(vocab_size, delimiter)
        self.spelt = {tuple(ids) for ids in spellings.values()}
        start = self.lm.start(False)
        for word, ids in spellings.items():
            index = self.words.get_index(word)
            self.trie.insert([*ids, delimiter], index, self.lm.score(start, index)[1])
        self.trie.smear(SmearingMode.MAX)  # each trie node scores the best word below it, so beams are pruned early
        self.vocab_size, self.blank, self.delimiter = vocab_size, blank, delimiter
        # KenLM scores in log10; pyctcdecode's alpha weighs natural logs.
        self.lm_weight, self.word_score = alpha * math.log(10), beta

    def search(self, log_probs: np.ndarray, beam_width: int) -> list[Beam]:
        """The final beams, best first. log_probs: (frames, vocab) log-softmax output."""
        from flashlight.lib.text.decoder import CriterionType, LexiconDecoder, LexiconDecoderOptions

        options = LexiconDecoderOptions(
            beam_width,
            min(TOKENS_PER_FRAME, self.vocab_size),
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
        return _results(decoder, log_probs, self.completed)

    def completed(self, emitted: list[int], path: np.ndarray) -> int:
        """How many words of `path` make whole entries. `emitted`: the entry indices the search
        emitted (-1 elsewhere). An entry is emitted at the word delimiter after it, so a path that
        ends on a whole entry with no delimiter after it ("zero" at the end of the audio) has one
        entry more; one that ends inside an entry ("seve" of "seven") has a fragment that is none."""
        entries = [self.entries[index] for index in emitted if 0 <= index < len(self.entries) - 1]
        count = sum(len(entry.split()) for entry in entries)  # an entry (a phrase) may hold several words
        collapsed = [int(token) for index, token in enumerate(path) if index == 0 or token != path[index - 1]]
        spelt: list[list[int]] = [[]]
        for token in collapsed:
            if token == self.delimiter:
                spelt.append([])
            elif token != self.blank:
                spelt[-1].append(token)
        rest = [word for word in spelt if word][count:]
        joined = [token for word in rest for token in [self.delimiter, *word]][1:]
        return count + len(rest) if rest and tuple(joined) in self.spelt else count


class LexiconFreeSearch:
    """flashlight-text's lexicon-free CTC beam search, with no language model: any spelling, the
    acoustic model alone ranking the beams (the n best, timed by their token paths)."""

    def __init__(self, vocab_size: int, blank: int, delimiter: int):
        from flashlight.lib.text.decoder import ZeroLM  # lexicon-free beam search

        self.lm = ZeroLM()
        self.vocab_size, self.blank, self.delimiter = vocab_size, blank, delimiter

    def search(self, log_probs: np.ndarray, beam_width: int) -> list[Beam]:
        """As `LexiconSearch.search`. log_probs: (frames, vocab) log-softmax output."""
        from flashlight.lib.text.decoder import CriterionType, LexiconFreeDecoder, LexiconFreeDecoderOptions

        options = LexiconFreeDecoderOptions(
            beam_width, min(TOKENS_PER_FRAME, self.vocab_size), BEAM_THRESHOLD, 0.0, 0.0, False, CriterionType.CTC
        )
        decoder = LexiconFreeDecoder(options, self.lm, self.delimiter, self.blank, [])
        return _results(decoder, log_probs)


def _results(decoder, log_probs: np.ndarray, completed=None) -> list[Beam]:
    """A flashlight decoder's final beams on `log_probs`, best first. `completed(emitted, path)`: the
    words of a beam's path that make whole lexicon entries (None: lexicon-free, every word counts)."""
    emissions = np.ascontiguousarray(log_probs, dtype=np.float32)
    results = decoder.decode(emissions.ctypes.data, len(emissions), emissions.shape[1])
    beams = []
    for result in results:
        # Each path has one token before the first frame and one after the last: the search's start and end.
        path = np.asarray(result.tokens[1:-1], dtype=np.int64)
        words = None if completed is None else completed(list(result.words), path)
        beams.append(Beam(path, float(result.score), words))
    return sorted(beams, key=lambda beam: -beam.score)

"""Logits -> text with word timings: greedy (best path) and beam search with a KenLM model and hotwords.

Every decoder gives the same result: the text and its words, each with start and end (seconds) and a
confidence: the mean probability, over the word's frames, of the token the decoder's path puts
there (for greedy decoding, the best token). A word that beam search or a lexicon forced on audio
that says something else scores low, and so does the transcript: its confidence is its weakest
word's (0 with no word). Words below `min_confidence` are marked `low_confidence`. Beam search can
also give the n best transcripts with their scores, and keep its output to a list of phrases
(`model.phrases`), or to a lexicon of words (`model.lexicon`: a model folder's own, or its word
language model's words). Two beam searches do it: pyctcdecode's (Python; hotwords, any spelling)
and flashlight-text's (C++; within a lexicon, or lexicon-free without a language model), chosen
per search by `choose_search`'s rule or by `BeamOptions.beam_search`. Every caller (the CLI,
evaluation, pseudo-labelling, the server's worker processes) decodes here, with the decode
defaults below. Imports no torch; beam search needs pyctcdecode, kenlm and flashlight-text,
imported when built.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .ctc import CTCVocabulary, best_alignment
from .lexicon import LexiconFreeSearch, LexiconSearch, arpa_words
from .phrases import MAX_PHRASES, PhraseError, PhraseGrammar, in_alphabet_case, normalise_phrases
from .quiet import quiet_lm_loading

# The decode defaults, for every caller.
BEAM_WIDTH = 100  # beams kept at each frame
LM_ALPHA = 0.5  # language model weight
LM_BETA = 1.0  # word insertion bonus
HOTWORD_WEIGHT = 10.0  # score bonus of a hotword
MAX_ALTERNATIVES = 10  # n-best transcripts one search may return
# Words less confident than this are marked low_confidence. On the digits model with its lexicon, 0.75 marks
# 93% of English sentences and every noise clip, and 1.6% of correctly recognised digit strings (docs/decoding.md).
MIN_CONFIDENCE = 0.75


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float  # seconds
    confidence: float  # 0-1: the mean probability of the decoder's token over the word's frames
    low_confidence: bool = False  # below the caller's min_confidence


@dataclass
class Alternative:
    text: str
    score: float  # the beam search's log score: acoustic + weighted LM + word bonus (+ hotwords); higher is better


@dataclass
class Decoded:
    text: str
    words: list[Word]
    alternatives: list[Alternative] = field(default_factory=list)  # best first; the first one's text is `text`
    search: Search | None = None  # the beam search that ran ("pyctcdecode", "flashlight"); None: greedy

    @property
    def confidence(self) -> float:
        """The weakest word's confidence (a digit string is only as right as its least sure digit); 0
        when nothing was recognised."""
        return min((word.confidence for word in self.words), default=0.0)

    def mark(self, min_confidence: float) -> Decoded:
        """Mark the words less confident than `min_confidence`."""
        for word in self.words:
            word.low_confidence = word.confidence < min_confidence
        return self


# The beam searches: pyctcdecode (Python, with KenLM's Python module: hotwords, any spelling) and
# flashlight-text (C++: within a lexicon, or lexicon-free without a language model; no hotwords).
Search = Literal["pyctcdecode", "flashlight"]
SEARCHES = ("auto", "pyctcdecode", "flashlight")  # "auto": `choose_search`'s rule

MAX_BEAM_WIDTH = 1024  # the widest search anyone may ask for; a server may set a lower limit
MAX_HOTWORDS = 100  # hotwords in one search


@dataclass(frozen=True)
class BeamOptions:
    """What each beam search may choose; the language model and its weights are the decoder's.

    Part of `model.options.DecodeOptions`: every field's metadata (`help`, and the `min`, `max` or
    `max_items` it may take) is what the command lines and the server's requests are generated
    from. With `phrases` the phrases are the search's language model and the decoder's own is not
    used (see `model.phrases`)."""

    # Beams kept at each frame; None: the caller's default (BEAM_WIDTH, or a server's --beam-width).
    beam_width: int | None = field(
        default=None,
        metadata={
            "help": f"beams kept at each frame (default {BEAM_WIDTH}; on a server, its --beam-width)",
            "min": 1,
            "max": MAX_BEAM_WIDTH,
        },
    )
    # Words the search favours, matched in any letter case.
    hotwords: tuple[str, ...] = field(
        default=(),
        metadata={"help": "beam search only: words to favour, in any letter case", "max_items": MAX_HOTWORDS},
    )
    # The score bonus of each hotword.
    hotword_weight: float = field(
        default=HOTWORD_WEIGHT, metadata={"help": "the score bonus of a hotword", "min": 0, "max": 100}
    )
    # How many of the best distinct transcripts to return, best first (None or 0: none).
    alternatives: int | None = field(
        default=None,
        metadata={
            "help": "beam search only: the n best distinct transcripts with their scores, best first (default: none)",
            "min": 1,
            "max": MAX_ALTERNATIVES,
        },
    )
    # The only words or phrases the transcript may hold (None: any).
    phrases: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "beam search only: the only words or phrases the transcript may hold; a transcript is a "
            "sequence of whole phrases, or empty if none fits the audio",
            "max_items": MAX_PHRASES,
        },
    )

    # Which beam search runs; "auto": `choose_search`'s rule.
    beam_search: Literal["auto", "pyctcdecode", "flashlight"] = field(
        default="auto",
        metadata={
            "help": "beam search only: pyctcdecode (hotwords; any spelling), flashlight (C++, several times "
            "faster; within the model's lexicon or its language model's words; no hotwords) or auto (default: "
            "flashlight when the model has a lexicon or a word language model, unless hotwords or phrases are "
            "asked)",
            "choices": SEARCHES,
        },
    )

    @property
    def width(self) -> int:
        return self.beam_width or BEAM_WIDTH

    @property
    def given(self) -> bool:
        """Whether any option only beam search uses was asked for (the hotword weight alone is not)."""
        return (
            self.beam_width is not None
            or bool(self.hotwords)
            or bool(self.alternatives)
            or self.phrases is not None
            or self.beam_search != "auto"
        )


def choose_search(options: BeamOptions, has_words: bool) -> Search:
    """The one rule for which beam search runs: the one asked for; else pyctcdecode when hotwords
    (flashlight has none) or phrases are asked, or when the decoder has no words to search within
    (`has_words`: no lexicon and no word language model in ARPA form); else flashlight, which on a
    30k-word language model is 5-7x faster at fewer errors (docs/decoding.md)."""
    if options.beam_search != "auto":
        return options.beam_search
    if options.hotwords or options.phrases is not None or not has_words:
        return "pyctcdecode"
    return "flashlight"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def path_words(vocab: CTCVocabulary, path: np.ndarray, log_probs: np.ndarray, frame_seconds: float) -> list[Word]:
    """The words a frame path (a token id per frame) spells, in seconds, each with the mean probability
    of the path's tokens over its frames as its confidence. log_probs: (frames, vocab)."""
    on_path = np.exp(log_probs[np.arange(len(path)), path])
    spans, current, start, end = [], "", 0, 0
    for span in vocab.token_spans(path):
        if span.token == vocab.word_delimiter_token:
            if current:
                spans.append((current, start, end))
            current = ""
            continue
        if not current:
            start = span.start_frame
        current += span.token.lower() if vocab.do_lower_case else span.token
        end = span.end_frame
    if current:
        spans.append((current, start, end))
    return [
        Word(
            text,
            round(start * frame_seconds, 3),
            round(end * frame_seconds, 3),
            round(float(on_path[start:end].mean()), 4),
        )
        for text, start, end in spans
    ]


def span_words(
    vocab: CTCVocabulary, spans: list[tuple[str, int, int]], log_probs: np.ndarray, frame_seconds: float
) -> list[Word]:
    """(word, start frame, end frame) spans, as pyctcdecode gives them, -> words in seconds, each with
    the confidence `path_words` gives it along the word's best alignment within its frames."""
    words = []
    for text, start, end in spans:
        if end <= start:
            continue
        frames = log_probs[start:end]
        ids = [vocab.ids.get(char) for char in text]
        path = frames.argmax(axis=-1) if None in ids else best_alignment(frames, ids, vocab.blank_id)
        confidence = float(np.exp(frames[np.arange(len(path)), path]).mean())
        words.append(Word(text, round(start * frame_seconds, 3), round(end * frame_seconds, 3), round(confidence, 4)))
    return words


def greedy_decode(vocab: CTCVocabulary, logits: np.ndarray, frame_seconds: float) -> Decoded:
    """Best path: the text `CTCVocabulary.greedy_decode` gives (single-spaced), plus words from the
    emitted tokens' frames. logits: (frames, vocab)."""
    best = logits.argmax(axis=-1)
    # The words single-spaced: a blank between two word delimiters would leave two spaces.
    text = " ".join(vocab.decode_ids(best).split())
    return Decoded(text, path_words(vocab, best, log_softmax(logits), frame_seconds))


class DecoderStartError(Exception):
    """The beam-search decoder could not be built (e.g. a language model KenLM refuses)."""


def labels(vocab: CTCVocabulary) -> list[str]:
    """pyctcdecode's alphabet: the blank is "", the word delimiter a space."""
    alphabet = []
    for index in range(len(vocab)):
        token = vocab.tokens.get(index, vocab.unk_token)
        alphabet.append("" if token == vocab.pad_token else " " if token == vocab.word_delimiter_token else token)
    return alphabet


def letters(vocab: CTCVocabulary) -> set[str]:
    """The characters the model writes: its one-character tokens less the blank and the word delimiter."""
    return {
        token
        for token in vocab.tokens.values()
        if len(token) == 1 and token not in (vocab.pad_token, vocab.word_delimiter_token)
    }


def check_phrases(vocab: CTCVocabulary, phrases: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The phrases as beam search matches them (see `normalise_phrases`); PhraseError if the model
    cannot write one."""
    return normalise_phrases(phrases, letters(vocab))


def check_lexicon(vocab: CTCVocabulary, words: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A lexicon's words as the model spells them (in its letter case); PhraseError for a word it
    cannot write, or an entry of more than one word."""
    words = check_phrases(vocab, words)
    several = [word for word in words if " " in word]
    if several:
        raise PhraseError(f"a lexicon lists single words, not {several[0]!r}")
    return words


def one_line(error: BaseException) -> str:
    """KenLM's errors hold a C++ signature and file offsets; keep what it says is wrong."""
    text = " ".join(str(error).split())
    reason = re.search(r"threw \w+(?: because `.*?'\.|\.)\s*(.+?)\)?$", text)
    return reason.group(1) if reason else text or type(error).__name__


class SearchUnavailable(ValueError):
    """The beam search asked for cannot run here: flashlight with hotwords, or with a KenLM binary
    language model and no lexicon (its words cannot be listed)."""


class BeamSearchDecoder:
    """CTC beam search scored with a KenLM model when given, loaded once, by two searches: pyctcdecode
    (lexicon-free; hotwords and phrases) and flashlight-text (`model.lexicon`: within `lexicon`'s
    words when given, else within the language model's words, else lexicon-free with no language
    model). Each `decode` runs the one `choose_search` picks."""

    def __init__(
        self,
        vocab: CTCVocabulary,
        lm: str | Path | None = None,
        alpha: float = LM_ALPHA,
        beta: float = LM_BETA,
        lexicon: tuple[str, ...] | None = None,
    ):
        self.vocab = vocab
        self._no_flashlight = ""  # why flashlight cannot search here, when it cannot
        try:
            with quiet_lm_loading(lm):  # KenLM's and pyctcdecode's start-up chatter: one line instead
                from pyctcdecode import Alphabet, build_ctcdecoder  # CTC beam search with KenLM scoring and hotwords

                self._decoder = build_ctcdecoder(
                    labels(vocab), kenlm_model_path=str(lm) if lm else None, alpha=alpha, beta=beta
                )
                self._alphabet = Alphabet.build_alphabet(labels(vocab))  # for searches restricted to phrases
                self._flashlight = self._flashlight_search(lm, alpha, beta, lexicon)
        except DecoderStartError:
            raise
        except Exception as error:  # pyctcdecode, flashlight and KenLM raise many kinds; all mean "cannot decode"
            raise DecoderStartError(one_line(error)) from None

    @property
    def has_words(self) -> bool:
        """Whether flashlight searches within words here (a lexicon, or the language model's)."""
        return isinstance(self._flashlight, LexiconSearch)

    def _flashlight_search(
        self, lm: str | Path | None, alpha: float, beta: float, lexicon: tuple[str, ...] | None
    ) -> LexiconSearch | LexiconFreeSearch | None:
        vocab = self.vocab
        if vocab.word_delimiter_token not in vocab.ids:
            if lexicon is not None:
                raise DecoderStartError("a lexicon needs a model with a word delimiter token")
            self._no_flashlight = "flashlight's search needs a model with a word delimiter token"
            return None
        delimiter = vocab.ids[vocab.word_delimiter_token]
        if lexicon is not None:
            spellings = {word: [vocab.ids[char] for char in word] for word in check_lexicon(vocab, lexicon)}
        elif lm is not None:
            spellings = self._lm_spellings(lm)
            if not spellings:
                return None
        else:
            return LexiconFreeSearch(len(vocab), vocab.blank_id, delimiter)
        return LexiconSearch(spellings, len(vocab), vocab.blank_id, delimiter, lm, alpha, beta)

    def _lm_spellings(self, lm: str | Path) -> dict[str, list[int]]:
        """The language model's words the model can write, each by its name in the model and spelt
        in the model's letter case (a lower-case model of an upper-case alphabet is still read)."""
        words = arpa_words(lm)
        if words is None:
            self._no_flashlight = (
                f"flashlight's search needs the words of {Path(lm).name}, a KenLM binary file: give the model "
                "a lexicon (lexicon.txt, --lexicon), or its language model as ARPA"
            )
            return {}
        alphabet = letters(self.vocab)
        spellings = {
            word: [self.vocab.ids[char] for char in text]
            for word, text in zip(words, in_alphabet_case(words, alphabet))
            if text and set(text) <= alphabet
        }
        if not spellings:
            self._no_flashlight = f"this model can write none of the words of {Path(lm).name}"
        return spellings

    def check(self, options: BeamOptions) -> None:
        """SearchUnavailable, before any audio, if `options` ask for a search that cannot run here."""
        if choose_search(options, self.has_words) != "flashlight":
            return
        if options.hotwords:
            raise SearchUnavailable(
                "hotwords need beam_search=pyctcdecode (or auto): flashlight's search has no hotwords"
            )
        if options.phrases is None and self._flashlight is None:
            raise SearchUnavailable(self._no_flashlight)

    def decode(self, logits: np.ndarray, frame_seconds: float, options: BeamOptions = BeamOptions()) -> Decoded:
        """logits: (frames, vocab), finite. With `options.phrases`, a transcript no sequence of them
        spells is never returned: if no path through the audio spells one, the text is empty. The
        search is `choose_search`'s; SearchUnavailable if flashlight is asked for and cannot run."""
        log_probs = log_softmax(logits.astype(np.float32))
        if choose_search(options, self.has_words) == "flashlight":
            return self._decode_flashlight(log_probs, frame_seconds, options)
        if options.phrases is None:
            beams = self._decoder.decode_beams(
                log_probs,
                beam_width=options.width,
                hotwords=list(options.hotwords) or None,
                hotword_weight=options.hotword_weight,
            )
        else:
            beams = self._decode_phrases(log_probs, options)
        beams = [beam for beam in beams if math.isfinite(beam[-1])]  # -inf: outside the phrases
        if not beams:
            return Decoded("", [], search="pyctcdecode")
        text, _, word_frames, _, _ = beams[0]
        spans = [(word, start, end) for word, (start, end) in word_frames]
        return Decoded(
            text,
            span_words(self.vocab, spans, log_probs, frame_seconds),
            _alternatives(beams, options.alternatives or 0),
            "pyctcdecode",
        )

    def _decode_flashlight(self, log_probs: np.ndarray, frame_seconds: float, options: BeamOptions) -> Decoded:
        """flashlight's search: within the phrases when given (each one a lexicon entry, scored by the
        acoustic model alone, as pyctcdecode's phrase search), else the decoder's own. Words and their
        times come from each beam's token path."""
        self.check(options)
        search = self._flashlight if options.phrases is None else self._phrase_search(options.phrases)
        beams = [
            (path_words(self.vocab, beam.path, log_probs, frame_seconds)[: beam.words], beam.score)
            for beam in search.search(log_probs, options.width)
        ]
        if not beams:
            return Decoded("", [], search="flashlight")
        texts = [(" ".join(word.word for word in words), score) for words, score in beams]
        return Decoded(texts[0][0], beams[0][0], _alternatives(texts, options.alternatives or 0), "flashlight")

    def _phrase_search(self, phrases: tuple[str, ...]) -> LexiconSearch:
        """A lexicon of the phrases, each spelt with the word delimiter between its words."""
        if self.vocab.word_delimiter_token not in self.vocab.ids:
            raise SearchUnavailable("flashlight's search needs a model with a word delimiter token")
        delimiter = self.vocab.ids[self.vocab.word_delimiter_token]
        spellings = {
            phrase: [delimiter if char == " " else self.vocab.ids[char] for char in phrase]
            for phrase in check_phrases(self.vocab, phrases)
        }
        return LexiconSearch(spellings, len(self.vocab), self.vocab.blank_id, delimiter, None, 0.0, 0.0)

    def _decode_phrases(self, log_probs: np.ndarray, options: BeamOptions) -> list[tuple]:
        """Beam search whose language model is the phrases (`PhraseGrammar`), over the tokens they
        use. Every such token is a candidate at every frame, however unlikely (the phrases may force
        a path the acoustic model doubts; the blank, always a candidate, can wait out any sound);
        the others are masked out. Masking adds the same constant to every beam at a frame, so it
        changes no ranking."""
        from pyctcdecode import BeamSearchDecoderCTC
        from pyctcdecode.constants import MIN_TOKEN_CLIP_P

        phrases = check_phrases(self.vocab, options.phrases)
        used = set("".join(phrases)) | {"", " "}
        masked = np.full_like(log_probs, -np.inf)
        columns = [index for index, label in enumerate(self._alphabet.labels) if label in used]
        masked[:, columns] = log_probs[:, columns]
        decoder = BeamSearchDecoderCTC(self._alphabet, PhraseGrammar(phrases))
        try:
            # pyctcdecode floors log probabilities at log(MIN_TOKEN_CLIP_P): masked tokens sit on the
            # floor, below this threshold; every token the phrases use is above it.
            return decoder.decode_beams(
                masked,
                beam_width=options.width,
                token_min_logp=math.log(MIN_TOKEN_CLIP_P) + 0.5,
                hotwords=list(options.hotwords) or None,
                hotword_weight=options.hotword_weight,
            )
        finally:
            decoder.cleanup()  # pyctcdecode keeps every decoder's language model in a class-wide table


def _alternatives(beams: list[tuple], count: int) -> list[Alternative]:
    """The best `count` distinct transcripts of beams (sorted best first; each (text, ..., score))."""
    alternatives: dict[str, float] = {}
    for text, *_, score in beams:
        if len(alternatives) == count:
            break
        alternatives.setdefault(text, round(float(score), 4))
    return [Alternative(text, score) for text, score in alternatives.items()]

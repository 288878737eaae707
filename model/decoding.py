"""Logits -> text with word timings: greedy (best path) and beam search with a KenLM model and hotwords.

Every decoder gives the same result: the text and its words, each with start and end (seconds) and a
confidence: the mean probability, over the word's frames, of the token the decoder's path puts
there (for greedy decoding, the best token). A word that beam search or a lexicon forced on audio
that says something else scores low, and so does the transcript: its confidence is its weakest
word's (0 with no word). Words below `min_confidence` are marked `low_confidence`. Beam search can
also give the n best transcripts with their scores, and keep its output to a list of phrases
(`model.phrases`), or to a lexicon of words (`model.lexicon`: a model folder's own, the default
search when it has one). Every caller (the CLI, evaluation, pseudo-labelling, the server's worker
processes) decodes here, with the decode defaults below. Imports no torch; beam search needs
pyctcdecode and kenlm (and flashlight-text with a lexicon), imported when built.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .ctc import CTCVocabulary, best_alignment
from .lexicon import LexiconSearch
from .phrases import MAX_PHRASES, PhraseError, PhraseGrammar, normalise_phrases
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

    @property
    def width(self) -> int:
        return self.beam_width or BEAM_WIDTH

    @property
    def given(self) -> bool:
        """Whether any option only beam search uses was asked for (the hotword weight alone is not)."""
        return self.beam_width is not None or bool(self.hotwords) or bool(self.alternatives) or self.phrases is not None


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


class BeamSearchDecoder:
    """CTC beam search scored with a KenLM model when given, loaded once: within `lexicon`'s words when
    given (flashlight-text, `model.lexicon`), else lexicon-free (pyctcdecode, which also takes hotwords
    and phrases)."""

    def __init__(
        self,
        vocab: CTCVocabulary,
        lm: str | Path | None = None,
        alpha: float = LM_ALPHA,
        beta: float = LM_BETA,
        lexicon: tuple[str, ...] | None = None,
    ):
        self.vocab = vocab
        self._lexicon = None
        try:
            with quiet_lm_loading(lm):  # KenLM's and pyctcdecode's start-up chatter: one line instead
                from pyctcdecode import Alphabet, build_ctcdecoder  # CTC beam search with KenLM scoring and hotwords

                self._decoder = build_ctcdecoder(
                    labels(vocab), kenlm_model_path=str(lm) if lm else None, alpha=alpha, beta=beta
                )
                self._alphabet = Alphabet.build_alphabet(labels(vocab))  # for searches restricted to phrases
                if lexicon is not None:
                    if vocab.word_delimiter_token not in vocab.ids:
                        raise DecoderStartError("a lexicon needs a model with a word delimiter token")
                    spellings = {word: [vocab.ids[char] for char in word] for word in check_lexicon(vocab, lexicon)}
                    self._lexicon = LexiconSearch(
                        spellings, len(vocab), vocab.blank_id, vocab.ids[vocab.word_delimiter_token], lm, alpha, beta
                    )
        except Exception as error:  # pyctcdecode and KenLM raise many kinds; all mean "cannot decode with this"
            raise DecoderStartError(one_line(error)) from None

    def decode(self, logits: np.ndarray, frame_seconds: float, options: BeamOptions = BeamOptions()) -> Decoded:
        """logits: (frames, vocab), finite. With `options.phrases`, a transcript no sequence of them
        spells is never returned: if no path through the audio spells one, the text is empty. With a
        lexicon, the search stays within its words unless hotwords or phrases are given."""
        log_probs = log_softmax(logits.astype(np.float32))
        if self._lexicon is not None and options.phrases is None and not options.hotwords:
            return self._decode_lexicon(log_probs, frame_seconds, options)
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
            return Decoded("", [])
        text, _, word_frames, _, _ = beams[0]
        spans = [(word, start, end) for word, (start, end) in word_frames]
        return Decoded(
            text,
            span_words(self.vocab, spans, log_probs, frame_seconds),
            _alternatives(beams, options.alternatives or 0),
        )

    def _decode_lexicon(self, log_probs: np.ndarray, frame_seconds: float, options: BeamOptions) -> Decoded:
        beams = [
            (path_words(self.vocab, path, log_probs, frame_seconds), score)
            for path, score in self._lexicon.search(log_probs, options.width)
        ]
        if not beams:
            return Decoded("", [])
        texts = [(" ".join(word.word for word in words), score) for words, score in beams]
        return Decoded(texts[0][0], beams[0][0], _alternatives(texts, options.alternatives or 0))

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

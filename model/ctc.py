"""Text out: the CTC vocabulary of a `vocab.json` and greedy CTC decoding.

Decoding matches `Wav2Vec2Processor.batch_decode` character for character: collapse
repeats, drop the blank (the pad token), turn the word delimiter into a space. The
vocabulary also reads and writes the tokenizer files transformers expects. Imports no torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np

_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")
ENGLISH_CHARACTERS = "'abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class TokenSpan:
    """One emitted token and the frames it covers: [start_frame, end_frame)."""

    token: str
    start_frame: int
    end_frame: int


@dataclass
class CTCVocabulary:
    """Token ids of a character CTC model; the pad token is the CTC blank."""

    tokens: dict[int, str]
    pad_token: str = "<pad>"
    unk_token: str = "<unk>"
    bos_token: str = "<s>"
    eos_token: str = "</s>"
    word_delimiter_token: str = "|"
    replace_word_delimiter_char: str = " "
    do_lower_case: bool = False
    clean_up_tokenization_spaces: bool = False
    ids: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.ids = {token: index for index, token in self.tokens.items()}
        if self.pad_token not in self.ids:
            raise ValueError(f"the vocabulary has no pad token {self.pad_token!r}, which CTC uses as its blank")

    def __len__(self) -> int:
        return max(self.tokens) + 1

    @property
    def blank_id(self) -> int:
        return self.ids[self.pad_token]

    # -- decoding -------------------------------------------------------------------------

    def token_spans(self, frame_ids: np.ndarray | list[int]) -> list[TokenSpan]:
        """Collapse a frame-wise id sequence into the tokens CTC emits, with their frames."""
        spans = []
        frame = 0
        # Repeats collapse on the token text, as in transformers: two unknown ids in a row are one <unk>.
        for token, run in groupby(self.tokens.get(int(index), self.unk_token) for index in frame_ids):
            length = sum(1 for _ in run)
            if token != self.pad_token:
                spans.append(TokenSpan(token, frame, frame + length))
            frame += length
        return spans

    def decode_ids(self, frame_ids: np.ndarray | list[int]) -> str:
        """Text of a frame-wise id sequence (argmax path) as `batch_decode` gives it."""
        chars = [
            self.replace_word_delimiter_char if span.token == self.word_delimiter_token else span.token
            for span in self.token_spans(frame_ids)
        ]
        text = "".join(chars).strip()
        if self.do_lower_case:
            text = text.lower()
        if self.clean_up_tokenization_spaces:
            text = _clean_up_spaces(text)
        return text

    def greedy_decode(self, logits: np.ndarray) -> str:
        """Best-path decoding of one utterance's logits, shape (frames, vocab)."""
        return self.decode_ids(np.asarray(logits).argmax(axis=-1))

    # -- encoding (training targets) ---------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of a transcript: normalised, spaces as the word delimiter, in the vocabulary's
        letter case; characters the vocabulary lacks become the unknown token."""
        text = normalize_text(text)
        if not any(token.islower() for token in self.tokens.values() if len(token) == 1):
            text = text.upper()  # e.g. the upper-case vocabularies of the LibriSpeech models
        unknown = self.ids.get(self.unk_token, self.blank_id)
        return [self.ids.get(self.word_delimiter_token if char == " " else char, unknown) for char in text]

    @classmethod
    def from_texts(cls, texts: list[str]) -> CTCVocabulary:
        """A character vocabulary for these transcripts, laid out as Hugging Face's models are:
        `<pad>` (the blank) 0, `<s>` 1, `</s>` 2, `<unk>` 3, the word delimiter `|` 4, then the characters."""
        characters = sorted({char for text in texts for char in normalize_text(text)} - {" "})
        tokens = ["<pad>", "<s>", "</s>", "<unk>", "|", *characters]
        return cls(tokens=dict(enumerate(tokens)))

    @classmethod
    def english(cls) -> CTCVocabulary:
        """Every character `normalize_text` leaves of English text (a-z and the apostrophe), in the layout
        of `from_texts`: a model trained on digits alone can still be scored, biased and extended as any
        English character model."""
        return cls(tokens=dict(enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", *sorted(ENGLISH_CHARACTERS)])))

    # -- files ----------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, folder: str | Path) -> CTCVocabulary:
        """Read `vocab.json` and the tokenizer settings beside it."""
        folder = Path(folder)
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        if any(isinstance(value, dict) for value in vocab.values()):
            raise ValueError(
                f"{folder / 'vocab.json'} holds one vocabulary per language (a multilingual adapter model); "
                "such models are not supported"
            )
        tokens = {int(index): token for token, index in vocab.items()}
        settings: dict[str, Any] = {}
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = folder / name
            if path.is_file():
                settings.update(json.loads(path.read_text(encoding="utf-8")))
        for index, added in settings.get("added_tokens_decoder", {}).items():
            tokens.setdefault(int(index), _token_text(added))
        added_path = folder / "added_tokens.json"
        if added_path.is_file():
            for token, index in json.loads(added_path.read_text(encoding="utf-8")).items():
                tokens.setdefault(int(index), token)
        options = {name: _token_text(settings[name]) for name in _SPECIAL_TOKENS if settings.get(name)}
        for name in ("word_delimiter_token", "replace_word_delimiter_char"):
            if settings.get(name) is not None:
                options[name] = _token_text(settings[name])
        for name in ("do_lower_case", "clean_up_tokenization_spaces"):
            if name in settings:
                options[name] = bool(settings[name])
        return cls(tokens=tokens, **options)

    @classmethod
    def from_fairseq_dictionary(cls, path: str | Path) -> CTCVocabulary:
        """A fairseq `dict.ltr.txt`: `<symbol> <count>` per line after four special symbols.

        fairseq numbers `<s> <pad> </s> <unk>` 0-3 and uses `<s>` (0) as the CTC blank; the
        Hugging Face convention calls the blank `<pad>`, so ids 0 and 1 swap names, not rows.
        """
        tokens = {0: "<pad>", 1: "<s>", 2: "</s>", 3: "<unk>"}
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            if line.strip():
                tokens[len(tokens)] = line.split()[0]
        return cls(tokens=tokens)

    def save(self, folder: str | Path) -> None:
        """Write `vocab.json`, `tokenizer_config.json` and `special_tokens_map.json`."""
        folder = Path(folder)
        vocab = {token: index for index, token in sorted(self.tokens.items())}
        special = {name: getattr(self, name) for name in _SPECIAL_TOKENS}
        config = {
            "tokenizer_class": "Wav2Vec2CTCTokenizer",
            "processor_class": "Wav2Vec2Processor",
            **special,
            "word_delimiter_token": self.word_delimiter_token,
            "replace_word_delimiter_char": self.replace_word_delimiter_char,
            "do_lower_case": self.do_lower_case,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }
        _write_json(folder / "vocab.json", vocab)
        _write_json(folder / "tokenizer_config.json", config)
        _write_json(folder / "special_tokens_map.json", special)


def _extended_labels(token_ids: list[int], blank: int) -> tuple[np.ndarray, np.ndarray]:
    """CTC's extended label sequence (a blank before, between and after the tokens) and, for each of its
    states, whether a path may reach it by skipping the blank before it (not between two equal tokens)."""
    extended = np.full(2 * len(token_ids) + 1, blank, dtype=np.int64)
    extended[1::2] = token_ids
    skip = np.zeros(len(extended), dtype=bool)
    skip[3::2] = extended[3::2] != extended[1:-2:2]
    return extended, skip


def text_log_likelihood(log_probs: np.ndarray, token_ids: list[int], blank: int) -> float:
    """log P(token_ids | audio) under CTC: the log of the summed probability of every frame alignment
    that collapses to these tokens (the forward algorithm; what `torch.nn.functional.ctc_loss` negates).
    log_probs: (frames, vocab) log-softmax output. -inf when the frames are too few for the tokens."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    extended, skip = _extended_labels(token_ids, blank)
    alpha = np.full(len(extended), -np.inf)
    alpha[:2] = log_probs[0, extended[:2]]
    for frame in range(1, len(log_probs)):
        previous = np.concatenate(([-np.inf], alpha[:-1]))
        skipped = np.where(skip, np.concatenate(([-np.inf, -np.inf], alpha))[: len(alpha)], -np.inf)
        alpha = np.logaddexp(np.logaddexp(alpha, previous), skipped) + log_probs[frame, extended]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if token_ids else alpha[-1])


def best_alignment(log_probs: np.ndarray, token_ids: list[int], blank: int) -> np.ndarray:
    """The most probable frame alignment of these tokens (Viterbi): one token id per frame, blanks
    included, that collapses to `token_ids`. log_probs: (frames, vocab) log-softmax output, at least one
    frame per token (and one more between two equal tokens)."""
    extended, skip = _extended_labels(token_ids, blank)
    score = np.full(len(extended), -np.inf)
    score[:2] = log_probs[0, extended[:2]]
    came_from = np.zeros((len(log_probs), len(extended)), dtype=np.int64)  # the previous state of each state
    states = np.arange(len(extended))
    for frame in range(1, len(log_probs)):
        stay, step = score, np.concatenate(([-np.inf], score[:-1]))
        jump = np.where(skip, np.concatenate(([-np.inf, -np.inf], score[:-2])), -np.inf)
        choices = np.stack([stay, step, jump])
        best = choices.argmax(axis=0)
        came_from[frame] = states - best
        score = choices[best, states] + log_probs[frame, extended]
    state = len(extended) - 1 if len(extended) == 1 or score[-1] >= score[-2] else len(extended) - 2
    path = np.empty(len(log_probs), dtype=np.int64)
    for frame in range(len(log_probs) - 1, -1, -1):
        path[frame] = extended[state]
        state = came_from[frame, state]
    return path


def normalize_text(text: str) -> str:
    """Lower case, letters/digits/apostrophes only, single spaces: the form transcripts take for
    training targets and for scoring (references come as LibriSpeech upper case, punctuated text...)."""
    text = re.sub(r"[^\w' ]+", " ", text.lower().replace("_", " "))
    return " ".join(word.strip("'") for word in text.split() if word.strip("'"))


def _token_text(value: str | dict[str, Any]) -> str:
    """Special tokens are saved either as text or as an `AddedToken` dict."""
    return value["content"] if isinstance(value, dict) else value


def _clean_up_spaces(text: str) -> str:
    """transformers' `clean_up_tokenization`, applied when a tokenizer config asks for it."""
    for spaced, joined in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(spaced, joined)
    return text


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

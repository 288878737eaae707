"""A restricted vocabulary for one beam search (a grammar, in Vosk's words): the transcript is a
sequence of whole phrases from a list, and nothing else.

`PhraseGrammar` is a language model for pyctcdecode's beam search (it implements pyctcdecode's
language-model interface: `order`, `get_start_state`, `score_partial_token`, `score`). A word
that no allowed phrase can continue with scores minus infinity, and so does a transcript that
ends inside a phrase, so every beam that survives is a sequence of allowed phrases; every allowed
continuation scores 0, so the acoustic model alone chooses among them. It is built per request,
from the phrases alone: the beam search's own language model stays loaded and is not used for
that search. Imports neither pyctcdecode nor torch.
"""

from __future__ import annotations

import bisect
import math

MAX_PHRASES = 10_000  # phrases in one request
MAX_PHRASE_CHARACTERS = 100  # characters in one phrase

NO_PATH = None  # the state of a transcript no sequence of phrases can spell


class PhraseError(ValueError):
    """A phrase the model cannot write: empty, too long, or with a character outside its alphabet."""


def normalise_phrases(phrases: list[str] | tuple[str, ...], letters: set[str]) -> tuple[str, ...]:
    """Each phrase's words single-spaced and in the alphabet's letter case (when it has one case
    only), duplicates dropped. `letters`: the characters the model writes (not the word delimiter).
    PhraseError names the first phrase that cannot be written."""
    if not phrases:
        raise PhraseError("give at least one word or phrase")
    if len(phrases) > MAX_PHRASES:
        raise PhraseError(f"{len(phrases)} phrases; at most {MAX_PHRASES} are allowed")
    fold = _case_folding(letters)
    normalised: dict[str, None] = {}
    for phrase in phrases:
        text = fold(" ".join(phrase.split()))
        if not text:
            raise PhraseError("an empty phrase; every phrase needs a word")
        if len(text) > MAX_PHRASE_CHARACTERS:
            raise PhraseError(
                f"the phrase {text[:20]!r}... is {len(text)} characters long; at most "
                f"{MAX_PHRASE_CHARACTERS} are allowed"
            )
        unknown = sorted(set(text) - letters - {" "})
        if unknown:
            shown = ", ".join(repr(char) for char in unknown[:5])
            raise PhraseError(
                f"the phrase {phrase[:40]!r} has {shown}, which this model cannot write (its "
                f"alphabet: {''.join(sorted(letters))})"
            )
        normalised[text] = None
    return tuple(normalised)


def in_alphabet_case(words: list[str] | tuple[str, ...], letters: set[str]) -> tuple[str, ...]:
    """Words (hotwords, say) in the alphabet's letter case, as phrases are matched: a beam search
    never writes 'dashwood' with an upper-case alphabet, so that hotword would boost nothing."""
    fold = _case_folding(letters)
    return tuple(fold(word) for word in words)


def _case_folding(letters: set[str]):
    """Phrases are matched in the alphabet's case: upper case for an upper-case alphabet, and so on."""
    has_lower = any(char.islower() for char in letters)
    has_upper = any(char.isupper() for char in letters)
    if has_upper and not has_lower:
        return str.upper
    if has_lower and not has_upper:
        return str.lower
    return lambda text: text


class PhraseGrammar:
    """The phrases as a word trie. A state is the set of trie nodes the words so far may have
    reached (a word may end one phrase or continue a longer one), or NO_PATH."""

    def __init__(self, phrases: tuple[str, ...]):
        self._children: list[dict[str, int]] = [{}]  # node -> next word -> node; node 0 is the root
        self._ends: list[bool] = [False]  # a phrase ends at this node
        for phrase in phrases:
            node = 0
            for word in phrase.split():
                if word not in self._children[node]:
                    self._children[node][word] = len(self._children)
                    self._children.append({})
                    self._ends.append(False)
                node = self._children[node][word]
            self._ends[node] = True
        self._words = sorted({word for phrase in phrases for word in phrase.split()})

    # -- pyctcdecode's language-model interface ------------------------------------------------

    @property
    def order(self) -> int:
        return 1

    def get_start_state(self) -> frozenset[int]:
        return frozenset({0})

    def score_partial_token(self, partial_token: str) -> float:
        """0 if some allowed word starts so, else minus infinity (a beam that can never spell a word)."""
        index = bisect.bisect_left(self._words, partial_token)
        found = index < len(self._words) and self._words[index].startswith(partial_token)
        return 0.0 if found else -math.inf

    def score(
        self, prev_state: frozenset[int] | None, word: str, is_last_word: bool = False
    ) -> tuple[float, frozenset[int] | None]:
        """(0, next state) for a word an allowed phrase continues with (or starts with, after a whole
        phrase); (minus infinity, NO_PATH) otherwise, and at the end of a transcript cut inside a phrase."""
        state = prev_state
        if state is not NO_PATH and word:
            state = self.step(state, word)
        if state is NO_PATH or (is_last_word and not self.complete(state)):
            return -math.inf, NO_PATH
        return 0.0, state

    # -- the grammar --------------------------------------------------------------------------

    def step(self, state: frozenset[int], word: str) -> frozenset[int] | None:
        here = state | {0} if any(self._ends[node] for node in state) else state
        reached = frozenset(self._children[node][word] for node in here if word in self._children[node])
        return reached or NO_PATH

    def complete(self, state: frozenset[int]) -> bool:
        """Whole phrases so far (or no word at all)."""
        return state == {0} or any(self._ends[node] for node in state)

    def accepts(self, text: str) -> bool:
        """Whether `text` is a sequence of whole phrases."""
        state: frozenset[int] | None = self.get_start_state()
        for word in text.split():
            state = self.step(state, word)
            if state is NO_PATH:
                return False
        return self.complete(state)

"""Beam search on a real vocabulary: pyctcdecode against flashlight-text, speed and word error rate.

    python bench/decoders.py [--data ../shared/data] [--seconds 60] [--words 30000] [--beams 16,100]

The language model: a bigram ARPA written by `training.lm.write_bigram_arpa` (what `python -m
training lm` writes) from the sentences of the Gutenberg corpus in ../shared/data/text whose words
are all among its `--words` most frequent (about 30k words learnt from about 6 M running words);
cached in --work. The logits: 32-token English CTC output (`CTCVocabulary.english()`) for the
first `--seconds` of realspeech's utterances, synthesised from their reference texts at their real
durations (50 frames a second): each character a peak of one or two frames where a real model puts
it, blank between, with Gaussian noise everywhere and, per character, a chance that a similar-
sounding letter (b/p, m/n, vowels, ...) rises near or above it or that the blank swallows it. So
greedy decoding misspells words the way a weak acoustic model does, and a language model can
repair them; the same logits go to every decoder.

Decoders: greedy; pyctcdecode with the LM (the search the server ran for a model without a
lexicon); flashlight's lexicon search within the LM's words, with the same LM and weights (what
`beam_search=auto` now runs for a model with a word LM), and the same extending beams by every
token of a frame (torchaudio's default) rather than the likeliest few; flashlight's lexicon-free
search (no LM: it scores tokens, so a word LM cannot drive it). Each utterance is decoded alone, as the server
does; decoders take turns, round after round, and each row shows the median round in ms per
second of audio, its WER, and pyctcdecode's time over its own at the same beam width.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import lexicon  # noqa: E402
from model.ctc import CTCVocabulary, normalize_text  # noqa: E402
from model.decoding import LM_ALPHA, LM_BETA, BeamOptions, BeamSearchDecoder, greedy_decode  # noqa: E402
from training.lm import write_bigram_arpa  # noqa: E402
from training.metrics import error_rates  # noqa: E402

FRAME_RATE = 50  # wav2vec 2.0's frames per second
# Letters a weak acoustic model confuses with each other: a noisy character's rival comes from its group.
SUBSTITUTED, SWALLOWED = 0.08, 0.02  # chances, per letter, that a rival letter rises or the blank wins
SIMILAR = ("bpv", "dt", "gkcq", "mn", "sz", "fvh", "aeiouy", "lr", "wu", "jgy", "x", "'")


def language_model(data: Path, words: int, work: Path) -> tuple[Path, int, int]:
    """(ARPA path, distinct words, running words of the sentences it learnt from), built once."""
    path = work / f"gutenberg-{words}.arpa"
    corpus = data / "text" / "gutenberg-lm-corpus.txt.gz"
    with gzip.open(corpus, "rt", encoding="utf-8") as handle:
        sentences = [line.split() for line in handle if line.strip()]
    counts = Counter(word for sentence in sentences for word in sentence)
    vocabulary = {word for word, _ in counts.most_common(words)}
    kept = [" ".join(sentence) for sentence in sentences if all(word in vocabulary for word in sentence)]
    running = sum(len(sentence.split()) for sentence in kept)
    if not path.is_file():
        started = time.perf_counter()
        distinct = write_bigram_arpa(kept, path)
        print(f"# wrote {path}: {distinct} words, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    distinct = len({word for sentence in kept for word in sentence.split()})
    return path, distinct, running


def utterances(data: Path, seconds: float) -> list[tuple[str, float]]:
    """(normalised reference, duration in seconds) of realspeech's first utterances, `seconds` in all
    (0: all of them)."""
    chosen, total = [], 0.0
    with open(data / "realspeech" / "manifest.tsv", encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            text = " ".join(word for word in normalize_text(row["text"]).split() if word.isalpha() or "'" in word)
            if not text:
                continue
            chosen.append((text, float(row["duration_s"])))
            total += float(row["duration_s"])
            if seconds and total >= seconds:
                break
    return chosen


def synthesise(vocab: CTCVocabulary, text: str, seconds: float, generator: np.random.Generator) -> np.ndarray:
    """(frames, vocab) logits that spell `text` over `seconds`, with an acoustic model's kind of errors."""
    tokens = [vocab.ids["|" if char == " " else char] for char in text]
    frames = max(int(seconds * FRAME_RATE), 2 * len(tokens) + 2)  # room for a blank after every character
    logits = generator.normal(0.0, 1.0, (frames, len(vocab))).astype(np.float32)
    logits[:, vocab.blank_id] += 7.0
    logits[:, [vocab.ids[special] for special in ("<s>", "</s>", "<unk>")]] -= 6.0
    starts = np.linspace(0.05 * frames, 0.95 * frames - 2, len(tokens)).astype(int)
    letters = {char: next(group for group in SIMILAR if char in group) for char in "abcdefghijklmnopqrstuvwxyz'"}
    for token, start in zip(tokens, starts):
        peak = slice(start, start + (2 if generator.random() < 0.3 else 1))
        strength = 9.0 + generator.normal(0.0, 1.5)
        logits[peak, token] += strength
        logits[peak, vocab.blank_id] -= 3.0  # the blank a close second, as in real models
        char = vocab.tokens[token]
        chance = generator.random()
        if char not in letters:  # the word delimiter: heard, if weakly
            continue
        if chance < SUBSTITUTED:  # a similar letter rises near or above the right one
            group = [other for other in letters[char] if other != char] or list("aeiou")
            rival = vocab.ids[generator.choice(group)]
            logits[peak, rival] = logits[peak, token] + generator.normal(0.3, 1.2)
        elif chance < SUBSTITUTED + SWALLOWED:  # the blank wins
            logits[peak, token] = logits[peak, vocab.blank_id] - abs(generator.normal(0.5, 0.5))
    return logits


def every_token(run):
    """`run()` with flashlight extending beams by every token of a frame, as torchaudio does, rather
    than by its `model.lexicon.TOKENS_PER_FRAME` likeliest."""
    kept = lexicon.TOKENS_PER_FRAME
    lexicon.TOKENS_PER_FRAME = 1 << 16
    try:
        return run()
    finally:
        lexicon.TOKENS_PER_FRAME = kept


def measure(run, logits: list[np.ndarray]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    texts = [run(one) for one in logits]
    return time.perf_counter() - started, texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seconds", type=float, default=60.0, help="audio seconds of realspeech (0: all 398)")
    parser.add_argument("--words", type=int, default=30000, help="the language model's vocabulary")
    parser.add_argument("--beams", default="16,100", help="beam widths, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; each row is the median")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "w2v-bench-decoders")
    args = parser.parse_args()
    if not (args.data / "realspeech" / "manifest.tsv").is_file():
        raise SystemExit(f"error: no realspeech/manifest.tsv under {args.data} (give --data)")
    args.work.mkdir(parents=True, exist_ok=True)

    lm, distinct, running = language_model(args.data, args.words, args.work)
    vocab = CTCVocabulary.english()
    generator = np.random.default_rng(args.seed)
    chosen = utterances(args.data, args.seconds)
    references = [text for text, _ in chosen]
    logits = [synthesise(vocab, text, seconds, generator) for text, seconds in chosen]
    audio = sum(len(one) for one in logits) / FRAME_RATE
    frame = 1 / FRAME_RATE

    started = time.perf_counter()
    with_lm = BeamSearchDecoder(vocab, lm, LM_ALPHA, LM_BETA)  # pyctcdecode and flashlight, one LM file
    loaded = time.perf_counter() - started
    no_lm = BeamSearchDecoder(vocab)
    contenders = {"greedy": lambda one: greedy_decode(vocab, one, frame).text}
    for beam in [int(part) for part in args.beams.split(",")]:
        for name, decoder, search in (
            ("pyctcdecode, LM", with_lm, "pyctcdecode"),
            ("flashlight lexicon (LM's words), LM", with_lm, "flashlight"),
            ("flashlight lexicon-free, no LM", no_lm, "flashlight"),
        ):
            options = BeamOptions(beam_width=beam, beam_search=search)
            contenders[f"{name}, beam {beam}"] = lambda one, decoder=decoder, options=options: (
                decoder.decode(one, frame, options).text
            )
        options = BeamOptions(beam_width=beam, beam_search="flashlight")
        contenders[f"flashlight lexicon (LM's words), LM, every token per frame, beam {beam}"] = (
            lambda one, options=options: every_token(lambda: with_lm.decode(one, frame, options).text)
        )

    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    texts: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            spent, texts[name] = measure(run, logits)
            seconds[name].append(spent)

    print(
        f"{len(logits)} utterances, {audio:.1f} s of 32-token logits ({sum(len(r.split()) for r in references)} "
        f"words); LM: {lm.name}, {distinct} words, bigrams of {running / 1e6:.1f} M running words, loaded by both "
        f"searches in {loaded:.1f} s; median of {args.rounds} interleaved rounds\n"
    )
    print("| decoder | ms per audio second | WER | pyctcdecode time / this |")
    print("|---|---:|---:|---:|")
    for name, runs in seconds.items():
        per_second = 1000 * statistics.median(runs) / audio
        wer = error_rates(references, texts[name])["wer"]
        beam = name.rsplit("beam ", 1)[-1] if "beam" in name else None
        ratio = ""
        if beam is not None:
            reference = statistics.median(seconds[f"pyctcdecode, LM, beam {beam}"])
            ratio = f"{reference / statistics.median(runs):.1f}x"
        print(f"| {name} | {per_second:.2f} | {100 * wer:.1f}% | {ratio} |")


if __name__ == "__main__":
    main()

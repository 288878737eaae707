"""Data for the digits recipe beyond FSDD (run by digits-model.sh):

python training/recipes/digits_multi.py split DIGITS_MULTI OUT [--dev-fraction 0.2] [--seed 7] [--fold I --folds K]
    digits-multi (real recordings of many speakers) split by speaker: OUT/train.jsonl, OUT/dev.jsonl
    (whole speakers, about dev-fraction of each source's), OUT/dev-SOURCE.jsonl and
    OUT/train-words.jsonl (the isolated words of the training speakers, to join into strings). The
    transcripts are the spoken form: AN4's "oh" stays "oh" (manifest.tsv writes it "zero").
    --fold I --folds K (leave speakers out, training/recipes/digits-multi-folds.sh): the dev set is
    the I-th of K groups of whole speakers; group 0 is the dev set above, and the other speakers of
    each source are dealt into groups 1 to K-1.
python training/recipes/digits_multi.py folds-table FOLDS_FOLDER
    the leave-speakers-out results (FOLDS_FOLDER/fold-*/eval/*.json) as a Markdown table: each source's
    words and errors summed over the folds, so every speaker counts once.
python training/recipes/digits_multi.py noise OUT [--count 600] [--seed 8]
    OUT/manifest.jsonl: clips with nothing to transcribe (an empty text): coloured noise, mains hum,
    clicks, and music-like tones, 0.5-6 s at random levels.
python training/recipes/digits_multi.py noisy MANIFEST OUT --snr DB [--kinds white,pink,hum,babble]
        [--babble FOLDER] [--seed 11]
    OUT/manifest.jsonl: MANIFEST's recordings as a noisy microphone would give them: 0.5-1.5 s of
    the microphone's noise before and after the speech, and the same noise under it, DB below the
    recording's own level (its RMS over the whole recording), one kind per recording in turn. Babble
    is 3-6 voices at once from --babble FOLDER's audio files (speech without digits, say; 16 files
    drawn), else from the manifest's other recordings (talkers saying digits: words a model may
    rightly hear). The transcripts stay: every word written beyond them is one the noise made up
    (`training evaluate` counts them as insertions).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile  # writes the noise clips

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from the repository

from model.audio import load_audio  # noqa: E402
from training.augment import NOISE_KINDS, make_noise  # noqa: E402
from training.manifest import AUDIO_SUFFIXES, Entry, read_manifest, write_manifest  # noqa: E402

RATE = 16000
NOISY_KINDS = [kind for kind in NOISE_KINDS if kind != "talk"]  # noisy's babble is its talk


def split(data: Path, out: Path, dev_fraction: float, seed: int, fold: int = 0, folds: int = 1) -> None:
    with open(data / "manifest.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    with open(data / "provenance.tsv", newline="", encoding="utf-8") as handle:
        spoken = {
            row["audio"]: row["orig_text"].lower()
            for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        }
    speakers: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        speakers[row["source"]].add(row["speaker"])
    generator = random.Random(seed)
    groups: dict[str, list[list[str]]] = {}  # each source's speakers in `folds` groups; group 0 is the dev set
    for source, names in sorted(speakers.items()):
        groups[source] = [generator.sample(sorted(names), max(2, round(dev_fraction * len(names))))]
    for source, names in sorted(speakers.items()):  # a second pass, so that group 0 stays what it was alone
        rest = sorted(names - set(groups[source][0]))
        generator.shuffle(rest)
        groups[source] += [rest[group :: folds - 1] for group in range(folds - 1)]
    dev_speakers = {name for source_groups in groups.values() for name in source_groups[fold]}
    sets: dict[str, list[Entry]] = defaultdict(list)
    for row in rows:
        path = (data / row["audio"]).resolve()
        # AN4's own transcript says "oh" where the speaker did; other sources' originals are numerals ("0").
        text = " ".join((spoken[row["audio"]] if row["source"] == "an4" else row["text"]).split())
        entry = Entry(path, round(soundfile.info(str(path)).duration, 3), text)
        if row["speaker"] in dev_speakers:
            sets["dev"].append(entry)
            sets[f"dev-{row['source']}"].append(entry)
        else:
            sets["train"].append(entry)
            if len(text.split()) == 1:
                sets["train-words"].append(entry)
    for name, entries in sorted(sets.items()):
        write_manifest(entries, out / f"{name}.jsonl")
        print(f"{out / name}.jsonl: {len(entries)} recordings")


def noise(out: Path, count: int, seed: int) -> None:
    generator = np.random.default_rng(seed)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(count):
        length = int(generator.uniform(0.5, 6.0) * RATE)
        kind = ("white", "pink", "brown", "hum", "clicks", "tones")[index % 6]
        if kind == "clicks":
            samples = 0.02 * make_noise("pink", length, RATE, generator)
            for at in generator.integers(0, length, size=int(generator.integers(2, 20))):
                samples[at : at + 80] += generator.uniform(-1, 1) * np.exp(-np.arange(len(samples[at : at + 80])) / 10)
        elif kind == "tones":
            samples = _tones(length, generator)
        else:
            samples = make_noise(kind, length, RATE, generator)
        level = 10 ** (generator.uniform(-50, -10) / 20)  # RMS from -50 to -10 dBFS
        samples = np.clip(samples / max(np.sqrt(np.mean(np.square(samples))), 1e-9) * level, -1, 1)
        target = out / "audio" / f"{index:06d}.wav"
        soundfile.write(target, samples.astype(np.float32), RATE, subtype="PCM_16")
        entries.append(Entry(target, round(length / RATE, 3), ""))
    write_manifest(entries, out / "manifest.jsonl")
    print(f"{out / 'manifest.jsonl'}: {len(entries)} clips with nothing to transcribe")


def noisy(manifest: Path, out: Path, snr_db: float, kinds: list[str], seed: int, babble: Path | None) -> None:
    generator = np.random.default_rng(seed)
    entries = read_manifest(manifest)
    voices = [load_audio(entry.audio, RATE) for entry in entries]
    talkers = None  # babble's voices when they come from elsewhere
    if babble is not None:
        files = sorted(path for path in babble.rglob("*") if path.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise SystemExit(f"--babble {babble}: no wav, flac, mp3 or ogg files in it")
        talkers = [load_audio(path, RATE) for path in generator.permutation(files)[:16]]
    (out / "audio").mkdir(parents=True, exist_ok=True)
    noisy_entries = []
    for index, (entry, voice) in enumerate(zip(entries, voices)):
        kind = kinds[index % len(kinds)]
        others = talkers or [other for number, other in enumerate(voices) if number != index]
        before, after = (int(generator.uniform(0.5, 1.5) * RATE) for _ in range(2))
        speech = np.concatenate([np.zeros(before), voice, np.zeros(after)])
        level = np.sqrt(np.mean(np.square(voice, dtype=np.float64))) * 10 ** (-snr_db / 20)
        samples = np.clip(speech + level * make_noise(kind, len(speech), RATE, generator, others), -1, 1)
        target = out / "audio" / f"{index:06d}.wav"
        soundfile.write(target, samples.astype(np.float32), RATE, subtype="PCM_16")
        noisy_entries.append(Entry(target, round(len(samples) / RATE, 3), entry.text))
    write_manifest(noisy_entries, out / "manifest.jsonl")
    print(
        f"{out / 'manifest.jsonl'}: {len(noisy_entries)} recordings with {', '.join(kinds)} noise at {snr_db:g} dB SNR"
    )


def _tones(length: int, generator: np.random.Generator) -> np.ndarray:
    """Notes of random pitch and length, each with a few harmonics: something like music."""
    samples = np.zeros(length)
    at = 0
    while at < length:
        note = int(generator.uniform(0.1, 0.6) * RATE)
        time = np.arange(min(note, length - at)) / RATE
        pitch = 110 * 2 ** (generator.integers(0, 36) / 12)
        envelope = np.exp(-time * generator.uniform(1, 8))
        samples[at : at + len(time)] = sum(np.sin(2 * np.pi * pitch * k * time) / k for k in range(1, 5)) * envelope
        at += note
    return samples


SOURCES = {"an4": "AN4 connected strings", "speechcommands": "Speech Commands words", "audiomnist": "AudioMNIST words"}


def folds_table(folder: Path) -> None:
    """Each source's errors and words summed over the folds (every speaker once), greedy and with the LM."""
    totals: dict[str, dict[str, list[int]]] = {}  # source -> decoder -> [utterances, words, errors]
    fold_wers: list[float] = []  # each fold's WER with the LM over all its sources
    for fold in sorted(folder.glob("fold-*/eval"), key=lambda path: int(path.parent.name.split("-")[1])):
        fold_words = fold_errors = 0
        for source in SOURCES:
            result = json.loads((fold / f"{source}.json").read_text())
            for decoder in ("greedy", "beam"):
                counts = result[decoder]
                errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
                for key in (source, "all"):
                    row = totals.setdefault(key, {}).setdefault(decoder, [0, 0, 0])
                    row[0] += result["utterances"]
                    row[1] += counts["words"]
                    row[2] += errors
                if decoder == "beam":
                    fold_words, fold_errors = fold_words + counts["words"], fold_errors + errors
        fold_wers.append(fold_errors / fold_words)
    if not fold_wers:
        raise SystemExit(f"no results in {folder}/fold-*/eval (training/recipes/digits-multi-folds.sh makes them)")
    print(f"| held-out speakers ({len(fold_wers)} folds) | utterances | words | greedy WER | WER with the LM |")
    print("|---|---:|---:|---:|---:|")
    for key, label in [*SOURCES.items(), ("all", "all sources")]:
        (utterances, words, greedy), (_, _, beam) = totals[key]["greedy"], totals[key]["beam"]
        print(f"| {label} | {utterances} | {words} | {greedy / words:.2%} | {beam / words:.2%} |")
    print(f"\nWER with the LM, fold by fold: {', '.join(f'{wer:.2%}' for wer in fold_wers)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    split_parser = commands.add_parser("split")
    split_parser.add_argument("data", type=Path)
    split_parser.add_argument("out", type=Path)
    split_parser.add_argument("--dev-fraction", type=float, default=0.2)
    split_parser.add_argument("--seed", type=int, default=7)
    split_parser.add_argument("--fold", type=int, default=0, help="which group of speakers is the dev set")
    split_parser.add_argument("--folds", type=int, default=1, help="groups of speakers (1: dev and train only)")
    commands.add_parser("folds-table").add_argument("folder", type=Path)
    noise_parser = commands.add_parser("noise")
    noise_parser.add_argument("out", type=Path)
    noise_parser.add_argument("--count", type=int, default=600)
    noise_parser.add_argument("--seed", type=int, default=8)
    noisy_parser = commands.add_parser("noisy")
    noisy_parser.add_argument("manifest", type=Path)
    noisy_parser.add_argument("out", type=Path)
    noisy_parser.add_argument("--snr", type=float, required=True, help="dB below the recording's level")
    noisy_parser.add_argument("--kinds", default="white,pink,hum,babble", help="comma-separated, taken in turn")
    noisy_parser.add_argument("--babble", type=Path, help="a folder of speech to make babble of")
    noisy_parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if args.command == "split":
        if not 0 <= args.fold < max(args.folds, 1):
            parser.error(f"--fold {args.fold} is not one of the {args.folds} folds (0 to {args.folds - 1})")
        split(args.data, args.out, args.dev_fraction, args.seed, args.fold, args.folds)
    elif args.command == "folds-table":
        folds_table(args.folder)
    elif args.command == "noisy":
        kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
        unknown = sorted(set(kinds) - set(NOISY_KINDS))
        if not kinds or unknown:
            parser.error(f"--kinds: use {', '.join(NOISY_KINDS)} (not {', '.join(unknown) or 'nothing'})")
        noisy(args.manifest, args.out, args.snr, kinds, args.seed, args.babble)
    else:
        noise(args.out, args.count, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m training pseudo-label`: self-training's labels. A fine-tuned model transcribes unlabeled
audio (beam search with a KenLM model when given, else greedy); utterances it is confident about
become a labelled manifest, optionally joined with the real labels to fine-tune on both.

Confidence is the transcript's word confidence (the mean probability of the best token over a
word's frames, as the server reports it), averaged over the utterance's words.
"""

from __future__ import annotations

from dataclasses import dataclass

from tqdm import tqdm

from model.decoding import BeamOptions
from model.transcribe import DecodeOptions, Transcriber

from .manifest import Entry


@dataclass
class Labelled:
    entry: Entry
    confidence: float


def pseudo_label(transcriber: Transcriber, entries: list[Entry], beam: BeamOptions = BeamOptions()
                 ) -> list[Labelled]:
    """Every entry transcribed, with its confidence (0 for an empty transcript)."""
    results = []
    for entry in tqdm(entries, unit="utt", dynamic_ncols=True):
        transcript = transcriber.transcribe_file(entry.audio, DecodeOptions(beam=beam))
        words = transcript.words
        confidence = sum(word.confidence for word in words) / len(words) if words else 0.0
        results.append(Labelled(Entry(entry.audio, entry.duration, transcript.text), confidence))
    return results


def confident(labelled: list[Labelled], min_confidence: float) -> list[Entry]:
    return [item.entry for item in labelled if item.entry.text and item.confidence >= min_confidence]

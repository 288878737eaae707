"""What CTC fine-tuning trains: the model built from its start checkpoint, the vocabulary, the
audio settings, the examples with their target ids, and the masked CTC loss of one batch."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from model.audio import model_inputs
from model.config import FeatureSettings, Wav2Vec2Config
from model.ctc import CTCVocabulary
from model.pytorch.checkpoint import Checkpoint, load_checkpoint
from model.pytorch.wav2vec2 import Wav2Vec2ForCTC, init_weights

from .config import FinetuneConfig, feature_settings, model_config
from .manifest import Entry
from .pretraining import span_mask


@dataclass
class Example:
    audio: Path
    duration: float
    text: str
    targets: list[int]


def ctc_loss(
    forward,
    architecture: Wav2Vec2Config,
    features: FeatureSettings,
    vocab: CTCVocabulary,
    audio: list[np.ndarray],
    chosen: list[Example],
    frozen: bool,
    generator: np.random.Generator,
    device: torch.device,
    reduction: str,
) -> torch.Tensor:
    """CTC loss of one batch with random time and channel masks, averaged over utterances; with
    `reduction` "mean" each utterance's loss is first divided by its target length."""
    input_values, attention_mask = model_inputs(audio, features)
    frames = [architecture.num_frames(len(samples)) for samples in audio]
    width = architecture.num_frames(input_values.shape[1])
    time_mask = channel_mask = None
    if architecture.mask_time_prob > 0:
        time_mask = torch.from_numpy(
            span_mask(
                frames,
                width,
                architecture.mask_time_prob,
                architecture.mask_time_length,
                generator,
                architecture.mask_time_min_masks,
            )
        ).to(device)
    if architecture.mask_feature_prob > 0:
        hidden = architecture.hidden_size
        channel_mask = torch.from_numpy(
            span_mask(
                [hidden] * len(audio),
                hidden,
                architecture.mask_feature_prob,
                architecture.mask_feature_length,
                generator,
                architecture.mask_feature_min_masks,
            )
        ).to(device)
    mask = None if attention_mask is None else torch.from_numpy(attention_mask).to(device)
    logits = forward(torch.from_numpy(input_values).to(device), mask, time_mask, channel_mask, frozen)
    log_probs = logits.float().log_softmax(dim=-1).transpose(0, 1)  # (frames, batch, vocab), as ctc_loss wants
    targets = torch.tensor([token for example in chosen for token in example.targets], dtype=torch.long)
    target_lengths = torch.tensor([len(example.targets) for example in chosen], dtype=torch.long)
    loss = F.ctc_loss(
        log_probs,
        targets.to(device),
        torch.tensor(frames, device=device),
        target_lengths.to(device),
        blank=vocab.blank_id,
        reduction="none",
        zero_infinity=True,
    )
    if reduction == "mean":
        # An empty target (audio with nothing to say) is divided by the batch's mean target length, as if it
        # were a typical utterance: by 1, its loss would outweigh a transcribed utterance's tens of times.
        spoken = target_lengths[target_lengths > 0]
        typical = spoken.float().mean() if len(spoken) else torch.tensor(1.0)
        loss = loss / torch.where(target_lengths > 0, target_lengths.float(), typical).to(device)
    return loss.mean()


def load_start(reference):
    from model.hub import ModelNotFoundError
    from model.pytorch.checkpoint import CheckpointError

    try:
        return load_checkpoint(reference)
    except (CheckpointError, ModelNotFoundError) as error:
        raise ValueError(f"init {reference}: {error}") from None


def vocabulary(config: FinetuneConfig, start, texts: list[str]) -> CTCVocabulary:
    if config.vocab == "english":
        return CTCVocabulary.english()
    if config.vocab:
        path = Path(config.vocab)
        return CTCVocabulary.from_folder(path if path.is_dir() else path.parent)
    if start is not None and start.vocab is not None:
        return start.vocab
    if not texts:
        raise ValueError(f"{config.train_manifest}: no transcribed entries to train on")
    return CTCVocabulary.from_texts(texts)


def build_model(
    config: FinetuneConfig, start, vocab: CTCVocabulary, resumed: bool
) -> tuple[Wav2Vec2ForCTC, Wav2Vec2Config]:
    """A CTC model for `vocab`: the start checkpoint's body (and head, when its vocabulary is kept)."""
    masking = dict(
        mask_time_prob=config.mask_time_prob,
        mask_time_length=config.mask_time_length,
        mask_time_min_masks=config.mask_time_min_masks,
        mask_feature_prob=config.mask_channel_prob,
        mask_feature_length=config.mask_channel_length,
        mask_feature_min_masks=config.mask_channel_min_masks,
    )
    head = dict(vocab_size=len(vocab), pad_token_id=vocab.blank_id, ctc_zero_infinity=True)
    if start is None:
        architecture = dataclasses.replace(model_config(config.model), **masking, **head)
        model = init_weights(Wav2Vec2ForCTC(architecture), architecture)
        return model, architecture
    overrides = {key: value for key, value in config.model.items() if key != "preset"}
    known = {f.name for f in dataclasses.fields(Wav2Vec2Config)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown model settings: {', '.join(unknown)}")
    architecture = dataclasses.replace(start.config, **overrides, **masking, **head)
    model = init_weights(Wav2Vec2ForCTC(architecture), architecture)
    body = {key: value for key, value in start.model.state_dict().items() if key.startswith("wav2vec2.")}
    if not body:  # a bare Wav2Vec2Model
        body = {f"wav2vec2.{key}": value for key, value in start.model.state_dict().items()}
    ours = model.state_dict()
    # The mask embedding exists only when masking is on; keep whichever side has it.
    body = {key: value for key, value in body.items() if key in ours or not key.endswith("masked_spec_embed")}
    keep_head = (
        isinstance(start.model, Wav2Vec2ForCTC) and start.vocab is not None and start.vocab.tokens == vocab.tokens
    )
    if keep_head:
        body.update({key: value for key, value in start.model.state_dict().items() if key.startswith("lm_head.")})
    elif resumed:
        raise ValueError("the checkpoint to resume has a different vocabulary than this run")
    missing, unexpected = model.load_state_dict(body, strict=False)
    missing = [key for key in missing if not key.startswith("lm_head.") and not key.endswith("masked_spec_embed")]
    if missing or unexpected:
        raise ValueError(
            f"the init checkpoint does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model, architecture


def audio_settings(config: FinetuneConfig, start: Checkpoint | None, architecture: Wav2Vec2Config) -> FeatureSettings:
    """The audio settings the model trains on: the start checkpoint's (the ones it learnt with), else the config's."""
    if start is None:
        return feature_settings(config.features, architecture)
    if config.init and config.features:
        raise ValueError(
            f"features: a run from init={config.init} trains on that checkpoint's own audio settings "
            f"({start.features}); leave features out"
        )
    return start.features


def examples(
    entries: list[Entry],
    vocab: CTCVocabulary,
    architecture: Wav2Vec2Config,
    rate: int,
    max_seconds: float,
    report: bool,
) -> list[Example]:
    """Entries with their target ids; those too long, or too short for CTC to emit their text, are left out."""
    examples, too_long, too_short, unknown = [], 0, 0, 0
    for entry in entries:
        if entry.duration > max_seconds:
            too_long += 1
            continue
        targets = vocab.encode(entry.text or "")
        repeats = sum(1 for a, b in zip(targets, targets[1:]) if a == b)  # CTC needs a blank between repeats
        frames = architecture.num_frames(int(entry.duration * rate))
        # An empty text ("") is kept: noise or speech outside the vocabulary, which must give no words.
        if (not targets and entry.text != "") or frames < max(1, len(targets) + repeats):
            too_short += 1
            continue
        unknown += targets.count(vocab.ids.get(vocab.unk_token, -1))
        examples.append(Example(entry.audio, entry.duration, entry.text, targets))
    if not examples:
        raise ValueError("no usable training utterances (check the manifest's texts and durations)")
    if report and (too_long or too_short or unknown):
        print(
            f"training on {len(examples)} utterances: {too_long} left out as longer than {max_seconds} s, "
            f"{too_short} as too short for their text; {unknown} characters outside the vocabulary"
        )
    return examples

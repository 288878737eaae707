"""The core's transcription steps behind their two seams, with no model run: a recognizer whose
logits say which global frame each row is (so stitching is checked exactly), the real greedy
decoder and vocabulary of the shipped model, plain and coroutine seams; the one greedy/beam rule;
the flags and the server's request fields generated from `DecodeOptions`; batch planning; and the
runtime's execution providers and manifest."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil

import numpy as np
import pytest

from model.config import FeatureSettings, Wav2Vec2Config
from model.ctc import CTCVocabulary
from model.decoding import BEAM_WIDTH, MAX_ALTERNATIVES, BeamOptions
from model.onnx import OnnxRecognizer
from model.options import (
    DecodeOptions,
    OptionError,
    add_decode_arguments,
    check_options,
    choose_decoder,
    decode_options_from_args,
    option_fields,
)
from model.pipeline import Decode, Decoders, Infer, Pipeline, Windowing, run, run_async
from model.recognizer import Recognizer
from model.runtime import (
    RuntimeUnavailable,
    TensorRTProfile,
    built_tensorrt,
    execution_providers,
    read_manifest,
    record_tensorrt,
)
from model.windows import plan_batches

from conftest import REPO

FOLDER = REPO / "models" / "digits" / "onnx"


class FrameIndexRecognizer(Recognizer):
    """Samples that hold their own global index in, logits whose column 0 is each row's global frame
    (the index of its first sample, over the hop) out: a stitched sequence must count 0, 1, 2, ..."""

    def __init__(self):
        self.config = Wav2Vec2Config.from_json_file(FOLDER / "config.json")
        self.features = FeatureSettings.from_folder(FOLDER, self.config)
        self.vocab = CTCVocabulary.from_folder(FOLDER)
        self.runs: list[list[int]] = []  # the piece lengths of each run

    def logits(self, utterances: list[np.ndarray]) -> list[np.ndarray]:
        self.runs.append([len(samples) for samples in utterances])
        hop = self.config.samples_per_frame
        rows = []
        for samples in utterances:
            frames = self.config.num_frames(len(samples))
            out = np.zeros((frames, len(self.vocab)), dtype=np.float32)
            out[:, 0] = samples[np.arange(frames) * hop] / hop
            rows.append(out)
        return rows


def spelled(vocab: CTCVocabulary, text: str, repeat: int = 3) -> np.ndarray:
    """Logits (frames, vocab) whose best path spells `text`: each letter held `repeat` frames, a blank
    between letters, the word delimiter between words."""
    path = []
    for index, word in enumerate(text.split()):
        if index:
            path += [vocab.ids[vocab.word_delimiter_token]] * repeat
        for letter in word:
            path += [vocab.ids[letter]] * repeat + [vocab.blank_id]
    logits = np.full((len(path), len(vocab)), -5.0, dtype=np.float32)
    logits[np.arange(len(path)), path] = 5.0
    return logits


def test_long_audio_is_windowed_inferred_and_stitched_exactly_once_per_frame():
    recognizer = FrameIndexRecognizer()
    rate, hop = recognizer.sampling_rate, recognizer.config.samples_per_frame
    samples = np.arange(int(7.3 * rate), dtype=np.float32)  # each sample's value: its index
    pipeline = Pipeline(recognizer, windowing=Windowing(chunk_seconds=2.0, context_seconds=0.5))

    def infer(pieces):
        return recognizer.logits(pieces)

    (logits,) = run(pipeline.logits_steps([samples]), infer, None)
    assert len(recognizer.runs[0]) == 4, "7.3 s in 2 s windows"
    assert np.array_equal(logits[:, 0], np.arange(recognizer.config.num_frames(len(samples)))), (
        "every frame once, in order, each from a window that saw its context"
    )
    assert logits[-1, 0] * hop < len(samples)


def test_plain_and_coroutine_seams_give_the_same_transcripts():
    recognizer = FrameIndexRecognizer()
    decoders = Decoders(recognizer.vocab, recognizer.frame_seconds)
    texts = ["four one", "zero two five"]
    seen: list[DecodeOptions] = []
    utterances = [
        np.zeros(recognizer.sampling_rate, dtype=np.float32),
        np.zeros(2 * recognizer.sampling_rate, dtype=np.float32),
    ]

    def infer(pieces):  # the logits of each utterance spell its text
        assert [len(piece) for piece in pieces] == [len(samples) for samples in utterances]
        return [spelled(recognizer.vocab, text) for text in texts]

    def decode(logits, options):
        seen.append(options)
        return decoders.decode(logits, options)

    async def infer_later(pieces):
        await asyncio.sleep(0)
        return infer(pieces)

    async def decode_in_thread(logits, options):
        return await asyncio.to_thread(decode, logits, options)

    pipeline = Pipeline(recognizer, name="digits")
    plain = run(pipeline.transcribe_steps(utterances), infer, decode)
    awaited = asyncio.run(run_async(pipeline.transcribe_steps(utterances), infer_later, decode_in_thread))
    for result in (plain, awaited):
        assert [item.text for item in result] == texts
        assert [item.duration for item in result] == [1.0, 2.0]
        assert [item.decoder for item in result] == ["greedy", "greedy"]
        assert result[0].model == "digits" and result[0].alternatives is None
        assert [word.word for word in result[1].words] == ["zero", "two", "five"]
        assert result[0].confidence == min(word.confidence for word in result[0].words) > 0.99
    assert all(options.decoder == "greedy" for options in seen), "decode gets the decoder already chosen"
    with pytest.raises(TypeError, match="run_async"):
        run(pipeline.transcribe_steps(utterances), infer_later, decode)


def test_decode_gets_resolved_options_and_the_steps_refuse_what_they_cannot_use():
    recognizer = FrameIndexRecognizer()
    pipeline = Pipeline(recognizer, has_lm=False, beam_width=32)
    steps = pipeline.transcribe_steps(
        [np.zeros(16000, dtype=np.float32)], DecodeOptions(beam=BeamOptions(hotwords=("four",), alternatives=2))
    )
    assert isinstance(next(steps), Infer)
    step = steps.send([spelled(recognizer.vocab, "four")])
    assert isinstance(step, Decode)
    assert step.options.decoder == "beam" and step.options.beam.beam_width == 32, "the rule, and the default width"
    nan = np.full((5, len(recognizer.vocab)), np.nan, dtype=np.float32)
    steps = pipeline.transcribe_steps([np.zeros(16000, dtype=np.float32)])
    next(steps)
    with pytest.raises(ValueError, match="not finite"):
        steps.send([nan])
    with pytest.raises(ValueError, match="at least"):  # shorter than one frame
        next(pipeline.transcribe_steps([np.zeros(100, dtype=np.float32)]))


@pytest.mark.parametrize(
    "decoder, has_lm, beam, expected",
    [
        (None, False, BeamOptions(), "greedy"),
        (None, True, BeamOptions(), "beam"),
        (None, False, BeamOptions(beam_width=8), "beam"),
        (None, False, BeamOptions(hotwords=("four",)), "beam"),
        (None, False, BeamOptions(alternatives=3), "beam"),
        (None, False, BeamOptions(phrases=("four one",)), "beam"),
        (None, False, BeamOptions(hotword_weight=50.0), "greedy"),  # a weight alone favours no word
        ("greedy", True, BeamOptions(beam_width=8), "greedy"),
        ("beam", False, BeamOptions(), "beam"),
    ],
)
def test_one_rule_chooses_the_decoder(decoder, has_lm, beam, expected):
    assert choose_decoder(DecodeOptions(decoder, beam), has_lm) == expected


def test_greedy_with_beam_only_options_and_unwritable_phrases_are_refused():
    vocab = CTCVocabulary.from_folder(FOLDER)
    check_options(DecodeOptions("greedy", BeamOptions(beam_width=8)), vocab, True)  # a width is merely unused
    with pytest.raises(OptionError, match="hotwords need beam search") as refused:
        check_options(DecodeOptions("greedy", BeamOptions(hotwords=("four",))), vocab, True)
    assert refused.value.field == "hotwords"
    with pytest.raises(OptionError, match="cannot write") as refused:
        check_options(DecodeOptions(beam=BeamOptions(phrases=("four#",))), vocab, False)
    assert refused.value.unwritable


def test_flags_are_generated_from_the_options_and_read_back():
    parser = argparse.ArgumentParser()
    add_decode_arguments(parser)
    args = parser.parse_args(
        [
            "--decoder",
            "beam",
            "--beam-width",
            "16",
            "--hotwords",
            "four, one",
            "--alternatives",
            "3",
            "--phrases",
            "four one,five",
            "--min-confidence",
            "0.5",
        ]
    )
    assert decode_options_from_args(args) == DecodeOptions(
        "beam", BeamOptions(16, ("four", "one"), alternatives=3, phrases=("four one", "five")), 0.5
    )
    assert decode_options_from_args(parser.parse_args([])) == DecodeOptions(), "left out: the defaults"
    for flags, message in (
        (["--beam-width", "0"], "--beam-width must be at least 1"),
        (["--alternatives", str(MAX_ALTERNATIVES + 1)], "--alternatives must be at most"),
        (["--alternatives", "0"], "--alternatives must be at least 1"),
        (["--min-confidence", "2"], "--min-confidence must be at most 1"),
    ):
        with pytest.raises(OptionError, match=message):
            decode_options_from_args(parser.parse_args(flags))
    with pytest.raises(SystemExit):
        parser.parse_args(["--decoder", "viterbi"])


def test_the_servers_request_fields_are_the_cores():
    from service.options import REQUEST_OPTIONS, DecodeRequest

    fields = {spec.name: spec for spec in option_fields()}
    schema = DecodeRequest.model_json_schema()["properties"]
    for name in REQUEST_OPTIONS:
        spec = fields[name]
        assert schema[name]["description"] == spec.help
        default = DecodeRequest.model_fields[name].get_default(call_default_factory=True)
        assert (tuple(default) if spec.many and default is not None else default) == spec.default
    assert schema["beam_width"]["anyOf"][0]["maximum"] == fields["beam_width"].maximum
    request = DecodeRequest(beam_width=8, hotwords=["FOUR"])
    assert request.options(0.6) == DecodeOptions(beam=BeamOptions(8, ("FOUR",)), min_confidence=0.6)


def test_lm_weights_per_model_and_for_every_model():
    from service.settings import Settings

    models = [f"a={FOLDER}", f"b={FOLDER}", f"c={FOLDER}"]
    settings = Settings(model=models, lm_alpha=["0.7", "b=0.3"], lm_beta="c=2.5")
    weights = {spec.name: (spec.lm_alpha, spec.lm_beta) for spec in settings.models}
    assert weights == {"a": (0.7, 1.0), "b": (0.3, 1.0), "c": (0.7, 2.5)}
    with pytest.raises(ValueError, match="no model is named 'd'"):
        Settings(model=models, lm_alpha=["d=0.1"])
    with pytest.raises(ValueError, match="not a number"):
        Settings(model=models, lm_beta=["a=high"])


def test_batches_are_planned_by_length_within_both_bounds():
    lengths = [16000, 48000, 16100, 47000, 15900, 16050, 800, 46000]
    runs = plan_batches(lengths, max_batch_size=2, max_batch_samples=100_000)
    assert sorted(index for run in runs for index in run) == list(range(len(lengths))), "each piece once"
    for chosen in runs:
        assert len(chosen) <= 2 and len(chosen) * max(lengths[index] for index in chosen) <= 100_000
        assert (
            max(lengths[index] for index in chosen) <= 1.2 * min(lengths[index] for index in chosen) or len(chosen) == 1
        ), "similar lengths only"
    assert plan_batches([300_000], 8, 100_000) == [[0]], "one piece over the bound runs alone"


def test_execution_providers_and_the_tensorrt_manifest(tmp_path):
    folder = tmp_path / "onnx"
    shutil.copytree(FOLDER, folder)
    manifest = read_manifest(folder)
    assert execution_providers("cpu", folder, manifest, 16000) == (["CPUExecutionProvider"], None)
    assert execution_providers("cuda", folder, manifest, 16000)[0][0] == "CUDAExecutionProvider"
    with pytest.raises(RuntimeUnavailable, match="python -m export tensorrt"):
        OnnxRecognizer(folder, provider="tensorrt")
    profile = TensorRTProfile(max_seconds=20.0, max_batch=4)
    record_tensorrt(folder, "model.batched.onnx", ["input_values", "attention_mask"], profile)
    assert json.loads((folder / "export.json").read_text())["variant"] == manifest["variant"], "the rest is kept"
    assert built_tensorrt(folder, read_manifest(folder)) == (
        profile,
        "model.batched.onnx",
        ["input_values", "attention_mask"],
    )
    providers, model_file = execution_providers("tensorrt", folder, read_manifest(folder), 16000)
    name, options = providers[0]
    assert name == "TensorrtExecutionProvider" and model_file == "model.batched.onnx"
    assert options["trt_profile_max_shapes"] == "input_values:4x320000,attention_mask:4x320000"
    assert options["trt_engine_cache_path"] == str(folder / "tensorrt")
    with pytest.raises(RuntimeUnavailable, match="unknown execution provider"):
        execution_providers("rocm", folder, manifest, 16000)  # type: ignore[arg-type]


def test_default_beam_width_is_the_cores():
    assert BeamOptions().width == BEAM_WIDTH and BeamOptions(7).width == 7

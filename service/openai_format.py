"""OpenAI's transcription answers (`json`, `text`, `srt`, `vtt`, `verbose_json`) from a
transcription, and the checks OpenAI makes of `language` and `timestamp_granularities`.

`verbose_json` holds only what this server computes: a segment's `avg_logprob` comes from the CTC
posteriors (through its words' confidences, see `segment_logprob`); Whisper's `seek`, `tokens`,
`temperature`, `compression_ratio` and `no_speech_prob` describe its own decoder and are left out
rather than invented (docs/api-openai.md).
"""

from __future__ import annotations

import math

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from model.subtitles import segments, srt, vtt

from .errors import InvalidRequest

# ISO-639-1 codes and the names OpenAI's verbose_json gives languages (Whisper's), for the
# languages wav2vec 2.0 models are commonly fine-tuned on; a request may name either.
LANGUAGES = {
    "ar": "arabic",
    "ca": "catalan",
    "cs": "czech",
    "cy": "welsh",
    "da": "danish",
    "de": "german",
    "el": "greek",
    "en": "english",
    "es": "spanish",
    "et": "estonian",
    "eu": "basque",
    "fa": "persian",
    "fi": "finnish",
    "fr": "french",
    "hi": "hindi",
    "hu": "hungarian",
    "id": "indonesian",
    "it": "italian",
    "ja": "japanese",
    "ko": "korean",
    "lt": "lithuanian",
    "lv": "latvian",
    "nl": "dutch",
    "no": "norwegian",
    "pl": "polish",
    "pt": "portuguese",
    "ro": "romanian",
    "ru": "russian",
    "sk": "slovak",
    "sl": "slovenian",
    "sv": "swedish",
    "sw": "swahili",
    "ta": "tamil",
    "th": "thai",
    "tr": "turkish",
    "uk": "ukrainian",
    "ur": "urdu",
    "vi": "vietnamese",
    "zh": "chinese",
}
FLOOR = 1e-4  # the least confidence a word's log is taken of: one rounded to 0 would be -inf


def check_language(given: str | None, speaks: str) -> str:
    """The language's name (english) for the model that speaks `speaks` (an ISO-639-1 code), when
    `given` is left out or names that language by code or name; InvalidRequest (400) otherwise."""
    name = LANGUAGES.get(speaks, speaks)
    if given is None or not given.strip():
        return name
    wanted = given.strip().lower()
    code = wanted if wanted in LANGUAGES else next((c for c, n in LANGUAGES.items() if n == wanted), None)
    if code is None:
        raise InvalidRequest(
            "invalid_language_format",
            f"Invalid language {given[:32]!r}. Language parameter must be specified in ISO-639-1 format.",
            "language",
        )
    if code != speaks:
        raise InvalidRequest(
            "unsupported_language",
            f"language {code!r} ({LANGUAGES[code]}) is not spoken by this "
            f"model, which transcribes {speaks!r} ({name}) only",
            "language",
        )
    return name


def check_granularities(granularities: list[str], response_format: str) -> None:
    """OpenAI's rule: timestamps come only in verbose_json; asking for them in another format is a 400,
    not a silent no."""
    if granularities and response_format != "verbose_json":
        raise InvalidRequest(
            "invalid_value",
            f"timestamp_granularities needs response_format=verbose_json (it was {response_format})",
            "timestamp_granularities",
        )


def segment_logprob(words: list[dict]) -> float:
    """A segment's average log probability: the mean over its words, weighted by their length, of
    the natural log of each word's confidence (the mean CTC posterior of the decoder's token over
    the word's frames). 0 is certainty; more negative, less sure."""
    weights = [max(word["end"] - word["start"], 1e-3) for word in words]
    total = sum(weight * math.log(max(word["confidence"], FLOOR)) for weight, word in zip(weights, words))
    return round(total / sum(weights), 4)


def usage(duration: float) -> dict:
    """What a transcription cost, as OpenAI bills audio models: seconds of audio."""
    return {"type": "duration", "seconds": round(duration, 3)}


def openai_response(response_format: str, granularities: list[str], language: str, result) -> Response:
    """`result`: a `model.pipeline.Transcript`, with word timestamps."""
    words = result.to_dict()["words"]
    if response_format == "json":
        return JSONResponse({"text": result.text, "usage": usage(result.duration)})
    if response_format == "text":
        return PlainTextResponse(result.text + "\n")
    if response_format in ("srt", "vtt"):
        return PlainTextResponse((srt if response_format == "srt" else vtt)(segments(words)))
    wanted = set(granularities or ["segment"])
    body = {
        "task": "transcribe",
        "language": language,
        "duration": result.duration,
        "text": result.text,
        "confidence": result.confidence,
        **result.decoding_fields(),
    }
    if "segment" in wanted:
        body["segments"] = [
            {
                "id": index,
                "start": segment["start"],
                "end": segment["end"],
                "text": segment["text"],
                "avg_logprob": segment_logprob(segment["words"]),
            }
            for index, segment in enumerate(segments(words))
        ]
    if "word" in wanted:
        body["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"]} for w in words]
    body["usage"] = usage(result.duration)
    return JSONResponse(body)

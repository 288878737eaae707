"""Words -> subtitle segments, and the SRT and WebVTT formats: the server's `srt`/`vtt` responses and
the command line's `--format srt|vtt` files are cut the same way."""

from __future__ import annotations

MAX_SEGMENT_SECONDS = 8.0
PAUSE_SECONDS = 0.6  # a pause at least this long starts a new segment


def segments(words: list[dict]) -> list[dict]:
    """Group words into segments at pauses and at a maximum length: [{start, end, text, words}]."""
    grouped: list[list[dict]] = []
    for word in words:
        if grouped and (
            word["start"] - grouped[-1][-1]["end"] < PAUSE_SECONDS
            and word["end"] - grouped[-1][0]["start"] <= MAX_SEGMENT_SECONDS
        ):
            grouped[-1].append(word)
        else:
            grouped.append([word])
    return [
        {
            "start": group[0]["start"],
            "end": group[-1]["end"],
            "text": " ".join(w["word"] for w in group),
            "words": group,
        }
        for group in grouped
    ]


def _clock(seconds: float, separator: str) -> str:
    milliseconds = round(seconds * 1000)
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    whole, milliseconds = divmod(milliseconds, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{separator}{milliseconds:03d}"


def srt(parts: list[dict]) -> str:
    return "".join(
        f"{index}\n{_clock(part['start'], ',')} --> {_clock(part['end'], ',')}\n{part['text']}\n\n"
        for index, part in enumerate(parts, start=1)
    )


def vtt(parts: list[dict]) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{_clock(part['start'], '.')} --> {_clock(part['end'], '.')}\n{part['text']}\n\n" for part in parts
    )

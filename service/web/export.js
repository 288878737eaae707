// A transcript as text, SRT, WebVTT or JSON, for the page's copy and download buttons.
//
// A transcript is a list of segments {start, end, text, words: [{word, start, end, confidence,
// low_confidence}]}, times in seconds from the transcript's start.
"use strict";

const PAUSE_SECONDS = 0.6; // as the server's subtitles: a pause this long starts a new segment
const MAX_SEGMENT_SECONDS = 8.0;

// Words (one file's) -> segments at pauses and at a maximum length, as service/subtitles.py groups them.
function wordSegments(words) {
  const groups = [];
  for (const word of words) {
    const last = groups[groups.length - 1];
    if (last && word.start - last[last.length - 1].end < PAUSE_SECONDS && word.end - last[0].start <= MAX_SEGMENT_SECONDS) {
      last.push(word);
    } else {
      groups.push([word]);
    }
  }
  return groups.map((group) => ({
    start: group[0].start, end: group[group.length - 1].end, text: group.map((w) => w.word).join(" "), words: group,
  }));
}

function stamp(seconds, separator) {
  let ms = Math.round(seconds * 1000);
  const hours = Math.floor(ms / 3600000);
  ms -= hours * 3600000;
  const minutes = Math.floor(ms / 60000);
  ms -= minutes * 60000;
  const whole = Math.floor(ms / 1000);
  ms -= whole * 1000;
  const two = (n) => String(n).padStart(2, "0");
  return `${two(hours)}:${two(minutes)}:${two(whole)}${separator}${String(ms).padStart(3, "0")}`;
}

const FORMATS = {
  txt: {
    type: "text/plain",
    render: (segments) => segments.map((s) => s.text).join("\n") + (segments.length ? "\n" : ""),
  },
  srt: {
    type: "application/x-subrip",
    render: (segments) => segments.map((s, i) =>
      `${i + 1}\n${stamp(s.start, ",")} --> ${stamp(s.end, ",")}\n${s.text}\n\n`).join(""),
  },
  vtt: {
    type: "text/vtt",
    render: (segments) => "WEBVTT\n\n" + segments.map((s) =>
      `${stamp(s.start, ".")} --> ${stamp(s.end, ".")}\n${s.text}\n\n`).join(""),
  },
  json: {
    type: "application/json",
    render: (segments, extra) => JSON.stringify({ ...extra, text: segments.map((s) => s.text).join(" "), segments },
      null, 2) + "\n",
  },
};

function renderTranscript(segments, format, extra = {}) {
  return FORMATS[format].render(segments, extra);
}

function downloadTranscript(segments, format, name, extra = {}) {
  const blob = new Blob([renderTranscript(segments, format, extra)], { type: FORMATS[format].type });
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `${name}.${format}`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

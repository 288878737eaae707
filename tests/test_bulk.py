"""Bulk transcription (`python -m model transcribe` with folders, `--manifest`, `--out`, `--workers`,
`--output-dir`): the same text as single files, every input exactly once across a crash and a
rerun, a worker killed mid-run costing nothing, failures as `error` lines; and pseudo-labels on the
same path. Real processes, the shipped digits model, real FSDD speech."""

from __future__ import annotations

import http.server
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from digit_strings import read_lines, write_digit_strings, write_manifest

from model.bulk.journal import Journal, JournalError
from model.bulk.progress import Progress
from model.subtitles import segments, srt

from conftest import HANG_SECONDS, REPO

ENV = {**os.environ, "PYTHONPATH": str(REPO)}
MODEL = str(REPO / "models" / "digits")


def transcribe(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "model", "transcribe", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=HANG_SECONDS,
        **kwargs,
    )


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("strings")


@pytest.fixture(scope="module")
def strings(folder) -> list[Path]:
    """Twelve spoken digit strings of 7-11 s each in `folder`, four of them in a subfolder."""
    return write_digit_strings(folder)


@pytest.fixture(scope="module")
def single_file_texts(strings) -> dict[str, str]:
    """What the command prints for the files one by one, the way it always has (no bulk path)."""
    result = transcribe(*map(str, strings))
    assert result.returncode == 0, result.stderr[-2000:]
    return dict(line.split("\t", 1) for line in result.stdout.splitlines())


def by_audio(lines: list[dict]) -> dict[str, dict]:
    return {line["audio"]: line for line in lines}


def start(*args: str) -> subprocess.Popen:
    """The command in a process group of its own, so the test can kill it and its workers."""
    return subprocess.Popen(
        [sys.executable, "-m", "model", "transcribe", *args],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for_lines(out: Path, process: subprocess.Popen, at_least: int) -> int:
    """Wait until `out` has `at_least` whole lines (or the process ends); how many it has."""
    deadline = time.monotonic() + HANG_SECONDS
    while time.monotonic() < deadline:
        lines = out.read_text().count("\n") if out.is_file() else 0
        if lines >= at_least or process.poll() is not None:
            return lines
        time.sleep(0.02)
    raise TimeoutError(f"{out} never reached {at_least} lines")


def test_a_folder_gives_each_file_the_single_file_text(strings, folder, single_file_texts, tmp_path):
    out = tmp_path / "out.jsonl"
    result = transcribe("--out", str(out), "--workers", "2", "--word-timestamps", str(folder))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = read_lines(out)
    assert sorted(line["audio"] for line in lines) == sorted(map(str, strings)), "each file once, named as found"
    for line in lines:
        assert line["text"] == single_file_texts[line["audio"]], line["audio"]
        assert line["decoder"] == "beam" and 5 < line["duration"] < 15
        assert [word["word"] for word in line["words"]] == line["text"].split()
    assert "12 transcribed (0 errors), 0 already done, of 12 inputs" in result.stderr
    assert result.stdout == "", "with --out the lines go to the file"
    assert "per worker: pid" in result.stderr and result.stderr.count("pid ") == 2, "both workers did work"


def test_a_manifest_keeps_its_fields_and_urls_are_read(strings, folder, single_file_texts, tmp_path):
    manifest = write_manifest(strings, folder / "manifest.jsonl", text="a reference", duration=9.0)

    # The same files over HTTP on loopback: a worker fetches what it is given a URL for.
    def handler(*args):
        return http.server.SimpleHTTPRequestHandler(*args, directory=str(folder))

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        urls = tmp_path / "urls.jsonl"
        urls.write_text(
            "".join(
                json.dumps({"audio": f"http://127.0.0.1:{server.server_port}/{path.relative_to(folder).as_posix()}"})
                + "\n"
                for path in strings[:3]
            )
        )
        from_urls = transcribe("--manifest", str(urls), "--json")
    finally:
        server.shutdown()
    result = transcribe("--manifest", str(manifest), "--out", str(tmp_path / "out.jsonl"))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = read_lines(tmp_path / "out.jsonl")
    assert [line["audio"] for line in lines] == [str(path.relative_to(manifest.parent)) for path in strings]
    for line, path in zip(lines, strings):
        assert line["speaker"] == path.stem and line["reference"] == "a reference", "input fields kept"
        assert line["text"] == single_file_texts[str(path)]
        assert line["duration"] != 9.0, "the duration is the audio's"
    assert from_urls.returncode == 0, from_urls.stderr[-2000:]
    assert [json.loads(line)["text"] for line in from_urls.stdout.splitlines()] == [
        single_file_texts[str(path)] for path in strings[:3]
    ]


def test_failures_are_error_lines_and_the_run_goes_on(strings, tmp_path):
    (tmp_path / "noise.wav").write_bytes(b"RIFF but not really a wave file" * 10)
    manifest = tmp_path / "m.jsonl"
    entries = [
        {"audio": str(strings[0])},
        {"audio": "noise.wav"},
        {"audio": "missing.flac"},
        {"audio": "http://127.0.0.1:9/nothing.wav"},
        {"audio": str(strings[1])},
        {"audio": str(strings[0])},
    ]
    manifest.write_text("".join(json.dumps(entry) + "\n" for entry in entries))
    result = transcribe("--manifest", str(manifest), "--out", str(tmp_path / "out.jsonl"))
    assert result.returncode == 1, "errors are reported by the exit status"
    lines = by_audio(read_lines(tmp_path / "out.jsonl"))
    assert len(lines) == 5, "the repeated input is done once"
    assert "could not decode" in lines["noise.wav"]["error"] and "text" not in lines["noise.wav"]
    assert "no such audio file" in lines["missing.flac"]["error"]
    assert "could not fetch" in lines["http://127.0.0.1:9/nothing.wav"]["error"]
    assert lines[str(strings[1])]["text"] and "error" not in lines[str(strings[1])]
    assert "5 transcribed (3 errors), 0 already done, of 5 inputs" in result.stderr
    assert "1 listed again (done once)" in result.stderr


def test_a_killed_run_continues_and_each_input_lands_once(strings, folder, single_file_texts, tmp_path):
    out = tmp_path / "out.jsonl"
    args = ("--out", str(out), "--workers", "2", str(folder))
    process = start(*args)
    written = wait_for_lines(out, process, 2)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its workers, as a crash or a lost machine would
    process.communicate()
    assert 2 <= written < len(strings), "the run was killed mid-way"
    with open(out, "a") as handle:
        handle.write('{"audio": "cut off mid-wri')  # what a kill during a write leaves
    before = out.read_text().count("\n")  # whole lines: the run may have written more since the count
    rerun = transcribe(*args)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    lines = read_lines(out)
    assert sorted(line["audio"] for line in lines) == sorted(map(str, strings)), "every input exactly once"
    assert all(line["text"] == single_file_texts[line["audio"]] for line in lines)
    assert f"{len(strings) - before} transcribed (0 errors), {before} already done" in rerun.stderr
    again = transcribe(*args)
    assert "0 transcribed (0 errors), 12 already done" in again.stderr and out.read_text().count("\n") == 12


def test_a_worker_killed_mid_run_costs_nothing(strings, folder, single_file_texts, tmp_path):
    out = tmp_path / "out.jsonl"
    process = start("--out", str(out), "--workers", "2", str(folder))
    wait_for_lines(out, process, 1)
    workers = [pid for pid in child_pids(process.pid) if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(workers) == 2, workers
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=HANG_SECONDS)
    assert process.returncode == 0, stderr[-2000:]
    lines = read_lines(out)
    assert sorted(line["audio"] for line in lines) == sorted(map(str, strings))
    assert all(line["text"] == single_file_texts[line["audio"]] for line in lines)
    assert "1 worker(s) lost and replaced" in stderr


def child_pids(parent: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return children


def test_output_dir_writes_each_format_in_the_folders_layout(strings, folder, tmp_path):
    for format in ("srt", "vtt", "txt", "json"):
        words = ["--word-timestamps"] if format == "json" else []  # subtitles have words without asking
        result = transcribe("--output-dir", str(tmp_path / format), "--format", format, *words, str(folder))
        assert result.returncode == 0, result.stderr[-2000:]
        written = sorted(path.relative_to(tmp_path / format).as_posix() for path in (tmp_path / format).rglob("*.*"))
        assert written == sorted(path.relative_to(folder).with_suffix(f".{format}").as_posix() for path in strings)
    first = strings[0].relative_to(folder)
    line = json.loads((tmp_path / "json" / first.with_suffix(".json")).read_text())
    assert (tmp_path / "txt" / first.with_suffix(".txt")).read_text() == line["text"] + "\n"
    assert (tmp_path / "srt" / first.with_suffix(".srt")).read_text() == srt(segments(line["words"]))
    assert (tmp_path / "vtt" / first.with_suffix(".vtt")).read_text().startswith("WEBVTT\n\n00:00:0")
    assert line["text"].split()[0] in (tmp_path / "vtt" / first.with_suffix(".vtt")).read_text()


def test_bad_requests_are_refused_with_a_reason(strings, tmp_path):
    no_dir = transcribe("--format", "srt", str(strings[0]))
    assert no_dir.returncode == 2 and "--output-dir" in no_dir.stderr
    nothing = transcribe()
    assert nothing.returncode == 2 and "give audio files or folders, or --manifest" in nothing.stderr
    both = transcribe("--manifest", str(tmp_path / "m.jsonl"), str(strings[0]))
    assert both.returncode == 2 and "not both" in both.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio": "a.wav"}\n{"path": "b.wav"}\n')
    malformed = transcribe("--manifest", str(bad), "--out", str(tmp_path / "out.jsonl"))
    assert malformed.returncode == 1 and "line 2 is not a manifest entry" in malformed.stderr
    assert (tmp_path / "out.jsonl").read_text() == "", "a bad manifest fails before any work"
    out = tmp_path / "greedy.jsonl"
    assert transcribe("--no-lm", "--out", str(out), str(strings[0])).returncode == 0
    other = transcribe("--out", str(out), str(strings[1]))
    assert other.returncode == 1 and "other settings" in other.stderr and out.read_text().count("\n") == 1


def test_the_journal_cuts_a_torn_line_and_refuses_a_second_writer(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"audio": "a", "text": "one"}\n{"audio": "b", "te')
    with Journal(path, {"model": "m"}) as journal:
        assert journal.done == {"a"} and journal.lines_before == 1
        with pytest.raises(JournalError, match="another run"):
            Journal(path, {"model": "m"}).__enter__()
        assert journal.write({"audio": "b", "text": "two"}) and not journal.write({"audio": "b", "text": "again"})
    assert path.read_text() == '{"audio": "a", "text": "one"}\n{"audio": "b", "text": "two"}\n'
    with pytest.raises(JournalError, match="model differ"):
        Journal(path, {"model": "other"}).__enter__()


def test_the_progress_line_shows_rates_and_eta():
    stream = io.StringIO()
    progress = Progress(10, before=2, stream=stream, terminal=True)
    for _ in range(3):
        progress.update(seconds=360.0)
        time.sleep(0.21)
    progress.update(error=True)
    line = progress.line()
    assert line.startswith("6/10 files (60%)") and "files/s" in line and "audio-h/s" in line
    assert "0.300 audio-h" in line and "ETA 0:0" in line and "1 error" in line
    assert stream.getvalue().count("\r") >= 3, "redrawn in place"


def labelled_manifest(strings: list[Path], folder: Path) -> Path:
    """A training manifest (audio, duration, text) of the strings."""
    import soundfile

    manifest = folder / "train.jsonl"
    manifest.write_text(
        "".join(
            json.dumps(
                {
                    "audio": str(path.relative_to(folder)),
                    "duration": soundfile.info(str(path)).duration,
                    "text": "a reference",
                }
            )
            + "\n"
            for path in strings
        )
    )
    return manifest


def pseudo_label(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "training",
            "pseudo-label",
            "--model",
            MODEL,
            "--lm",
            str(REPO / "models" / "digits" / "lm.arpa"),
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=ENV,
        timeout=HANG_SECONDS,
    )


def test_pseudo_labels_resume_and_refilter_without_transcribing_again(strings, folder, single_file_texts, tmp_path):
    manifest = labelled_manifest(strings, folder)
    out = tmp_path / "labels.jsonl"
    first = pseudo_label("--manifest", str(manifest), "--out", str(out), "--workers", "2", "--min-confidence", "0.5")
    assert first.returncode == 0, first.stderr[-2000:]
    scores = read_lines(tmp_path / "labels.scores.jsonl")
    assert sorted(row["audio"] for row in scores) == sorted(str(path.relative_to(folder)) for path in strings)
    for row in scores:
        assert row["text"] == single_file_texts[str(folder / row["audio"])] and row["reference"] == "a reference"
        assert 0 <= row["posterior"] <= 1 and 0 <= row["words"] <= 1 and 0 <= row["nbest"] <= 1
    kept = read_lines(out)
    kept_paths = [Path(row["audio"]) for row in kept]  # absolute: the corpus is not below the output's folder
    assert kept_paths == [path for path in strings if path in kept_paths], "in the manifest's order"
    assert len(kept) == sum(row["posterior"] >= 0.5 and bool(row["text"]) for row in scores)
    strict = sorted(row["posterior"] for row in scores)[len(scores) // 2]  # keeps about half
    second = pseudo_label("--manifest", str(manifest), "--out", str(out), "--min-confidence", str(strict))
    assert second.returncode == 0, second.stderr[-2000:]
    assert "0 transcribed (0 errors), 12 already done" in second.stderr, "the scores file is reused"
    assert len(read_lines(out)) == sum(row["posterior"] >= strict for row in scores) < len(scores)


def test_the_bulk_path_imports_neither_torch_nor_ray():
    script = (
        "import sys, model.bulk, model.bulk.cli, model.subtitles; "
        "print(sorted(name for name in ('torch', 'ray', 'cluster') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


PINNED = """
import os, sys
os.sched_setaffinity(0, {int(sys.argv[1])})  # before any library starts a thread
import numpy as np
from model.onnx import OnnxRecognizer
recognizer = OnnxRecognizer(sys.argv[2])  # threads 0: as many as the cores it may use
recognizer.logits([np.random.default_rng(0).standard_normal(32000).astype(np.float32)])
print(sorted({cpu for task in os.listdir('/proc/self/task') for cpu in os.sched_getaffinity(int(task))}))
"""


@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: ())(0)) < 2, reason="needs two CPUs to pin to one")
def test_a_process_pinned_to_one_core_keeps_its_inference_there():
    """A worker given one core (taskset, a cpuset) must not spread its inference threads over the
    machine: ONNX Runtime's own default pins a thread to every core of the machine."""
    cpu = min(os.sched_getaffinity(0))  # its default puts its second thread on the next core
    result = subprocess.run(
        [sys.executable, "-c", PINNED, str(cpu), str(REPO / "models" / "digits" / "onnx")],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=HANG_SECONDS,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [cpu]

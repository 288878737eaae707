"""Loading a language model without the libraries' alarming chatter.

KenLM writes to the process's stderr (file descriptor 2, from C++) while it reads an ARPA file
("Loading the LM will be faster if you build a binary file.", "Reading PATH" and a progress bar of
stars), and pyctcdecode warns through `logging` about things that are normal here ("Found entries
of length > 1 in alphabet": a CTC vocabulary's <pad>, <unk>...; "Only 14 unigrams passed as
vocabulary": a small LM such as the digits model's), and chats at INFO. `quiet_lm_loading` swallows
exactly those and logs one line that says what was loaded instead; anything else either writes is passed on.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("model.lm")

PYCTCDECODE_LOGGERS = ("pyctcdecode.alphabet", "pyctcdecode.decoder", "pyctcdecode.language_model")
# KenLM's lines while it reads an ARPA file: the hint, the path, the progress bar's scale and its stars.
KENLM_NOISE = re.compile(r"Loading the LM will be faster if you build a binary file\.|Reading .*|[-0-9]*-100|\**")
EXPECTED_WARNINGS = re.compile(r"Found entries of length > 1 in alphabet|Only \d+ unigrams passed as vocabulary")
UNIGRAMS = re.compile(r"Only (\d+) unigrams")


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def quiet_lm_loading(lm: str | Path | None):
    """Around the building of a beam-search decoder with language model `lm`: KenLM's and
    pyctcdecode's expected lines are dropped, the others passed on, and one INFO line on the
    `model.lm` logger says what was loaded (its file, ARPA or binary, its word count when known)."""
    collect = _Collect()
    loggers = [logging.getLogger(name) for name in PYCTCDECODE_LOGGERS]
    saved_state = [(logger.propagate, list(logger.handlers)) for logger in loggers]
    for logger in loggers:
        logger.propagate, logger.handlers = False, [collect]
    sys.stderr.flush()
    saved_fd, captured = _capture_fd(2)
    try:
        yield
    finally:
        sys.stderr.flush()
        output = _release_fd(2, saved_fd, captured)
        for logger, (propagate, handlers) in zip(loggers, saved_state):
            logger.propagate, logger.handlers = propagate, handlers
        _report(lm, output, collect.records)


def _capture_fd(fd: int):
    """Point `fd` at a temporary file; (the saved original, the file), or (None, None) where that
    cannot be done (no such descriptor)."""
    try:
        saved = os.dup(fd)
    except OSError:
        return None, None
    captured = tempfile.TemporaryFile()
    os.dup2(captured.fileno(), fd)
    return saved, captured


def _release_fd(fd: int, saved: int | None, captured) -> str:
    """Put `fd` back; what was written to it meanwhile."""
    if saved is None:
        return ""
    os.dup2(saved, fd)
    os.close(saved)
    captured.seek(0)
    text = captured.read().decode("utf-8", errors="replace")
    captured.close()
    return text


def _report(lm: str | Path | None, output: str, records: list[logging.LogRecord]) -> None:
    unexpected = [line for line in output.splitlines() if line.strip() and not KENLM_NOISE.fullmatch(line.strip())]
    if unexpected:  # not KenLM's usual progress: an error or a warning worth seeing, as it was written
        sys.stderr.write("\n".join(unexpected) + "\n")
        sys.stderr.flush()
    words = None
    for record in records:
        message = record.getMessage()
        found = UNIGRAMS.search(message)
        if found:
            words = int(found.group(1))
        if record.levelno >= logging.WARNING and not EXPECTED_WARNINGS.search(message):  # its INFO lines: chatter
            log.log(record.levelno, "%s", message)
    if lm is None:
        return
    path = Path(lm)
    kind = (
        "ARPA text (`build_binary` from KenLM makes a file that loads faster)"
        if "build a binary file" in output
        else "KenLM binary"
        if path.suffix != ".arpa"
        else "ARPA text"
    )
    counted = f", {words} words" if words is not None else ""
    log.info("language model %s loaded: %s%s", path.name, kind, counted)

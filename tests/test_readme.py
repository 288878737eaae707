"""The README's Python example runs as written, with a tiny local model and a real recording."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO


def test_python_examples_run(hf_ctc_folder, realspeech, tmp_path):
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert blocks, "the README should show how to use the package from Python"
    audio = next(row["path"] for row in realspeech if row["path"].endswith(".mp3"))
    exported = tmp_path / "onnx"
    result = subprocess.run([sys.executable, "-m", "export", "onnx", "--model", str(hf_ctc_folder), "--out",
                             str(exported)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    for block in blocks:
        code = (block.replace("facebook/wav2vec2-base-960h", str(hf_ctc_folder)).replace("speech.wav", audio)
                .replace("wav2vec2-base-960h-onnx", str(exported)))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip(), "the example prints a transcript"

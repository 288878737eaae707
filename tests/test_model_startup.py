"""Start-up with several models: a model that cannot be loaded, or options that do not fit together,
stop the server with one line saying why; names, the default model and each model's LM."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from model.package import DEFAULT_MODEL
from service.settings import Settings

from conftest import REPO


def service(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "service", "--port", "0", *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


def test_a_damaged_onnx_model_stops_startup_with_one_line(family, request, tmp_path):
    if family != "base":
        pytest.skip("one tiny model is enough")
    exported_folder = request.getfixturevalue("exported_folder")
    broken = shutil.copytree(exported_folder, tmp_path / "broken")
    for graph in broken.glob("*.onnx"):
        graph.write_bytes(b"\x08\x07" + bytes(range(256)) * 4)
    result = service("--model", str(exported_folder), "--model", f"damaged={broken}")
    assert result.returncode == 1
    line = one_error_line(result)
    assert line.startswith("error: model 'damaged' could not be loaded: "), line


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--model", "a=/nowhere/a"], 1, "model 'a': "),
        (["--model", "x=models/digits", "--model", "x=models/digits"], 2, "two models are named 'x'"),
        (["--model", "models/digits", "--lm", "english=/nowhere.arpa"], 2, "no model is named 'english'"),
        (["--model", "models/digits", "--default-model", "english"], 2, "--default-model english"),
        (["--model", "models/digits", "--lm", "digits=/nowhere.arpa"], 1, "model 'digits': language model"),
    ],
)
def test_bad_model_options_are_one_line(args, code, words):
    result = service(*args)
    assert result.returncode == code and words in one_error_line(result), result.stderr[-2000:]


def test_default_model_and_names():
    settings = Settings(
        model=[str(DEFAULT_MODEL), f"second={DEFAULT_MODEL}"], lm=["second=none"], default_model="second"
    )
    assert [spec.name for spec in settings.models] == ["second", "digits"] and settings.default.name == "second"
    assert settings.default.lm is None and settings.models[1].lm == DEFAULT_MODEL / "lm.arpa"
    bare = Settings(model=["models/digits", f"second={DEFAULT_MODEL}"], lm=["/some/other.arpa"])
    assert bare.default.lm == Path("/some/other.arpa"), "a bare --lm is the default model's"
    assert Settings(model="models/digits", model_name="renamed").default.name == "renamed"

"""wav2vec (1.0) and vq-wav2vec against fairseq, and `python -m model features` for every family.

The fairseq references are fixtures (tests/fixtures/wav2vec1, made by its make_fixtures.py with
fairseq installed); `test_live_oracle` rebuilds them with fairseq itself when it is importable.
wav2vec 2.0's layers are checked against transformers' `hidden_states`, live.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import transformers

from model.__main__ import main
from model.audio import normalize
from model.features import FeatureExtractor, Progress, units_line
from model.pytorch.checkpoint import CheckpointError
from model.pytorch.representations import load_representations
from model.pytorch.wav2vec1_fairseq import load_wav2vec1_checkpoint
from model.transcribe import Windowing

from conftest import save_tiny_hf_model

FIXTURES = Path(__file__).parent / "fixtures" / "wav2vec1"
CLIP = FIXTURES / "clip.flac"
ARCHITECTURES = ("wav2vec", "wav2vec-gru", "vq-wav2vec-gumbel", "vq-wav2vec-kmeans")
STYLES = ("args", "cfg")


def assert_close(actual: np.ndarray, expected: np.ndarray, relative: float = 1e-3) -> None:
    """max |difference| within `relative` of the reference's largest magnitude (the issue's target)."""
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= relative * np.abs(expected).max()


def clip() -> np.ndarray:
    return soundfile.read(CLIP, dtype="float32")[0]


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_features_and_codes_equal_fairseq(name, style):
    expected = np.load(FIXTURES / f"{name}.npz")
    representations = load_representations(FIXTURES / f"{name}.{style}.pt")
    assert representations.family == ("vq-wav2vec" if name.startswith("vq") else "wav2vec")
    samples = clip()
    for layer in ("z", "c"):
        actual = representations(samples, layer)
        assert actual.dtype == np.float32
        assert_close(actual, expected[layer])
    if "codes" in expected:
        codes = representations(samples, "codes")
        assert codes.shape == expected["codes"].shape and codes.dtype == np.int64
        assert (codes == expected["codes"]).mean() >= 0.999
        assert len(np.unique(codes)) > 4, "codes of one or two values would prove little"
    else:
        assert "codes" not in representations.layers


def test_cli_writes_codes_units_and_context(tmp_path):
    name = "vq-wav2vec-gumbel"
    expected = np.load(FIXTURES / f"{name}.npz")
    audio = tmp_path / "utterance one.flac"
    shutil.copy(CLIP, audio)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF, but nothing else")
    model = FIXTURES / f"{name}.cfg.pt"
    assert (
        main(
            [
                "features",
                "--model",
                str(model),
                "--layer",
                "codes",
                "--units",
                "--out",
                str(tmp_path / "codes"),
                str(audio),
                str(broken),
                str(CLIP),
            ]
        )
        == 1
    )  # the broken file fails; the others are written
    codes = np.load(tmp_path / "codes" / "utterance one.npy")
    np.testing.assert_array_equal(codes, expected["codes"])
    lines = (tmp_path / "codes" / "units.txt").read_text().splitlines()
    assert len(lines) == 3 and lines[0] == lines[2] and lines[1] == "", "line i stands for file i"
    tokens = lines[0].split()
    assert len(tokens) == len(codes) and tokens[0] == f"{codes[0, 0]}-{codes[0, 1]}"
    assert main(["features", "--model", str(model), "--out", str(tmp_path / "c"), str(audio)]) == 0
    assert_close(np.load(tmp_path / "c" / "utterance one.npy"), expected["c"])  # the default layer is c


def test_cli_errors_are_one_line_and_files_continue(tmp_path, capsys):
    model = str(FIXTURES / "wav2vec.args.pt")
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    assert main(["features", "--model", model, "--out", str(tmp_path / "out"), str(broken), str(CLIP)]) == 1
    assert (tmp_path / "out" / "clip.npy").is_file() and not (tmp_path / "out" / "broken.npy").exists()
    assert capsys.readouterr().err.count("error: ") == 1
    for arguments, message in (
        (["--layer", "codes"], "has no layer 'codes'; choose one of z, c"),
        (["--units"], "--units writes codes as text"),
        (["--layer", "z", "--chunk-seconds", "0"], "--chunk-seconds must be positive"),
    ):
        assert main(["features", "--model", model, "--out", str(tmp_path / "x"), *arguments, str(CLIP)]) == 1
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(CLIP, other / "clip.flac")
    assert main(["features", "--model", model, "--out", str(tmp_path / "x"), str(CLIP), str(other / "clip.flac")]) == 1
    assert "would both be written to clip.npy" in capsys.readouterr().err
    assert main(["features", "--model", str(tmp_path / "absent.pt"), "--out", str(tmp_path / "x"), str(CLIP)]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_transcribe_refuses_wav2vec1_and_names_features(capsys):
    assert main(["transcribe", "--model", str(FIXTURES / "wav2vec.cfg.pt"), str(CLIP)]) == 1
    assert "wav2vec (1.0) / vq-wav2vec checkpoint" in capsys.readouterr().err


def _edited(tmp_path: Path, name: str, edit) -> Path:
    saved = torch.load(FIXTURES / f"{name}.cfg.pt", weights_only=True)
    edit(saved)
    path = tmp_path / f"edited-{name}.pt"
    torch.save(saved, path)
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["cfg"]["model"].update(aggregator="lstm"), "aggregator='lstm' is not supported"),
        (lambda s: s["cfg"]["model"].update(vq_type="rvq"), "vq_type='rvq' is not supported"),
        (lambda s: s["cfg"]["model"].update(conv_aggregator_layers="[(16, 2, 2)]"), "stride other than 1"),
        (
            lambda s: s["cfg"]["model"].update(conv_aggregator_layers="__import__('os')"),
            "unsupported convolution layer",
        ),
        (lambda s: s["cfg"]["model"].update(vq_dim=8), "needs vq_dim equal to the encoder's dimension"),
        (lambda s: s["model"].pop("vector_quantizer.embedding"), "missing vector_quantizer.embedding"),
        (lambda s: s["model"].update({"extra.weight": torch.zeros(1)}), "unexpected extra.weight"),
        (
            lambda s: s["model"].update({"vector_quantizer.embedding": torch.zeros(3, 2, 8)}),
            "vector_quantizer.embedding has shape (3, 2, 8)",
        ),
    ],
)
def test_unsupported_or_mismatched_checkpoints_fail_clearly(tmp_path, edit, message):
    with pytest.raises(CheckpointError, match="edited-vq-wav2vec-kmeans.pt") as error:
        load_wav2vec1_checkpoint(_edited(tmp_path, "vq-wav2vec-kmeans", edit))
    assert message in str(error.value)


def test_long_audio_runs_in_windows_stitched_frame_exactly():
    """Each window's kept frames are frames of the whole: the stitched output has the whole's frame
    count, and a window's core equals that window run alone at the same global frames."""
    representations = load_representations(FIXTURES / "vq-wav2vec-kmeans.args.pt")
    samples = np.tile(clip(), 3)  # 6 s
    windowing = Windowing(chunk_seconds=1.0, context_seconds=0.5)
    for layer in ("z", "c", "codes"):
        whole = representations(samples, layer)
        windowed = FeatureExtractor(representations, layer, windowing)(samples)
        assert windowed.shape == whole.shape == (representations.config.num_frames(len(samples)), whole.shape[1])
        hop = representations.config.samples_per_frame
        start, end = 2 * 16000 - 8000, 3 * 16000 + 8000  # the window whose core is seconds 2-3
        alone = representations(samples[start:end], layer)
        core = alone[8000 // hop : 8000 // hop + 16000 // hop]
        np.testing.assert_allclose(windowed[2 * 16000 // hop : 3 * 16000 // hop], core, rtol=0, atol=1e-6)
        if layer != "codes":  # group norms see a window, not the whole: close, not equal
            assert np.corrcoef(windowed.ravel(), whole.ravel())[0, 1] > 0.95


def test_wav2vec2_layers_equal_transformers_hidden_states(tmp_path, family):
    folder = save_tiny_hf_model(tmp_path, family, architecture="Wav2Vec2ForPreTraining")
    reference = transformers.Wav2Vec2ForPreTraining.from_pretrained(folder).eval()
    representations = load_representations(folder)
    assert representations.layers == ("0", "1", "2", "codes") and representations.default_layer == "2"
    samples = clip()
    with torch.no_grad():
        inputs = torch.from_numpy(normalize(samples))[None]
        hidden = reference.wav2vec2(inputs, output_hidden_states=True).hidden_states
        extract = reference.wav2vec2.feature_extractor(inputs).transpose(1, 2)
        extract = reference.wav2vec2.feature_projection(extract)[1]
        logits = reference.quantizer.weight_proj(extract)[0].view(extract.shape[1], 2, -1)
    assert len(hidden) == 3
    for index, expected in enumerate(hidden):
        assert_close(representations(samples, str(index)), expected[0].numpy())
    codes = representations(samples, "codes")
    assert (codes == logits.argmax(-1).numpy()).mean() >= 0.999
    assert codes.shape == (len(hidden[0][0]), 2)


def test_wav2vec2_ctc_checkpoint_through_cli(tmp_path, hf_ctc_folder):
    out = tmp_path / "out"
    assert main(["features", "--model", str(hf_ctc_folder), "--layer", "1", "--out", str(out), str(CLIP)]) == 0
    reference = transformers.Wav2Vec2ForCTC.from_pretrained(hf_ctc_folder).eval()
    with torch.no_grad():
        expected = reference.wav2vec2(torch.from_numpy(normalize(clip()))[None], output_hidden_states=True)
    assert_close(np.load(out / "clip.npy"), expected.hidden_states[1][0].numpy())
    with pytest.raises(ValueError, match="choose one of 0, 1, 2$"):  # a CTC model has no quantizer
        load_representations(hf_ctc_folder).check_layer("codes")


def test_units_line_and_progress_bar():
    assert units_line(np.array([[3, 14], [0, 7]])) == "3-14 0-7"
    stream = io.StringIO()
    progress = Progress(2, stream, enabled=True)
    progress.update(1.5)
    progress.update(2.0)
    text = stream.getvalue()
    assert "1/2 files" in text and "2/2 files, 3.5 s of audio" in text and text.endswith("\n")
    quiet = io.StringIO()
    Progress(1, quiet).update(1.0)  # not a terminal: no bar
    assert quiet.getvalue() == ""


def _fairseq_available() -> bool:
    return importlib.util.find_spec("fairseq") is not None


@pytest.mark.skipif(
    not _fairseq_available(),
    reason="fairseq (the oracle) is not installed: the fixtures stand in "
    "for it (tests/fixtures/wav2vec1/make_fixtures.py)",
)
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_live_oracle(tmp_path, name):
    """fairseq builds each architecture with fresh random weights; its checkpoints, in both styles,
    load here and give fairseq's features and codes."""
    spec = importlib.util.spec_from_file_location("make_fixtures", FIXTURES / "make_fixtures.py")
    fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fixtures)
    model, config = fixtures.build(name, seed=7)
    samples = np.random.default_rng(7).standard_normal(24000).astype(np.float32) * 0.1
    expected = fixtures.reference(model, samples)
    for path in fixtures.save_both_styles(model, config, tmp_path, name):
        ours = load_representations(path)
        for layer, values in expected.items():
            actual = ours(samples, layer)
            if layer == "codes":
                assert (actual == values).mean() >= 0.999
            else:
                assert_close(actual, values)

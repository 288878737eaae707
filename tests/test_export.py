"""`python -m export`: ONNX fp32 / int8 / fp16 exports of both families, verified, self-describing,
and runnable without torch; TensorRT and CUDA where this machine has them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import transformers
from test_checkpoint import write_fairseq_checkpoint

from export.tensorrt import TensorRTUnavailable
from export.tensorrt import check_available as check_tensorrt
from model.audio import load_audio
from model.onnx import OnnxRecognizer
from model.pytorch.checkpoint import load_checkpoint

from conftest import REPO


def export(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export", *args], capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def speech(realspeech) -> list[str]:
    return [row["path"] for row in realspeech if row["sample_rate"] in ("16000", "22050")][:3]


@pytest.fixture(scope="module")
def fp32_folder(exported_folder) -> Path:
    return exported_folder


def test_folder_has_what_a_server_needs(fp32_folder, hf_ctc_folder):
    names = {path.name for path in fp32_folder.iterdir()}
    assert {"model.onnx", "vocab.json", "preprocessor_config.json", "config.json", "export.json"} <= names
    assert not any(name.endswith(".data") for name in names), "small models keep their weights inside model.onnx"
    manifest = json.loads((fp32_folder / "export.json").read_text())
    settings = json.loads((fp32_folder / "preprocessor_config.json").read_text())
    original = json.loads((hf_ctc_folder / "processor_config.json").read_text())["feature_extractor"]
    assert settings["sampling_rate"] == original["sampling_rate"]
    assert settings["return_attention_mask"] == original["return_attention_mask"]
    assert manifest["variant"] == "fp32"
    assert manifest["verification"]["fp32"]["max_abs_diff"] < 1e-3
    assert manifest["verification"]["fp32"]["transcripts_equal"] == manifest["verification"]["fp32"]["transcripts"]
    if settings["return_attention_mask"]:
        assert manifest["batched_model"] is None and "model.batched.onnx" not in names
    else:  # group-norm family: a second graph whose rows do not depend on padding, checked against PyTorch alone
        assert manifest["batched_model"] == "model.batched.onnx" and "model.batched.onnx" in names
        assert manifest["verification"]["batched"]["fp32"]["max_abs_diff"] < 1e-3
        batched = onnx.load(str(fp32_folder / "model.batched.onnx"))
        assert [given.name for given in batched.graph.input] == ["input_values", "attention_mask"]


def test_onnx_interface(fp32_folder, family):
    graph = onnx.load(str(fp32_folder / "model.onnx"))
    onnx.checker.check_model(graph)
    inputs = {given.name: given for given in graph.graph.input}
    expected = ["input_values", "attention_mask"] if family == "large" else ["input_values"]
    assert list(inputs) == expected
    assert inputs["input_values"].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    if family == "large":
        assert inputs["attention_mask"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    for given in inputs.values():  # batch and time are dynamic
        assert all(dim.dim_param for dim in given.type.tensor_type.shape.dim)
    (output,) = graph.graph.output
    assert output.name == "logits" and output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [dim.dim_param or dim.dim_value for dim in output.type.tensor_type.shape.dim] == ["batch", "frames", 32]
    assert not any("weight_g" in weight.name or "original0" in weight.name for weight in graph.graph.initializer)


def test_onnx_transcribes_real_speech_like_pytorch(fp32_folder, hf_ctc_folder, speech):
    exported = OnnxRecognizer(fp32_folder)
    checkpoint = load_checkpoint(hf_ctc_folder)
    utterances = [load_audio(path, 16000) for path in speech]
    processor = transformers.Wav2Vec2Processor.from_pretrained(hf_ctc_folder)
    reference = transformers.Wav2Vec2ForCTC.from_pretrained(hf_ctc_folder).eval()
    for samples, logits in zip(
        utterances,
        exported.logits(utterances) if exported.uses_attention_mask else [exported.logits([u])[0] for u in utterances],
    ):
        with torch.no_grad():
            expected = reference(processor(samples, sampling_rate=16000, return_tensors="pt").input_values).logits[0]
        assert logits.shape == tuple(expected.shape)
        assert np.abs(logits - expected.numpy()).max() < 1e-3
        assert exported.vocab.greedy_decode(logits) == checkpoint.vocab.greedy_decode(expected.numpy())


def test_runtime_imports_no_torch(fp32_folder):
    script = (
        f"import sys; from model.onnx import OnnxRecognizer; import numpy as np; "
        f"m = OnnxRecognizer({str(fp32_folder)!r}); m.logits([np.zeros(16000, dtype=np.float32)]); "
        f"print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_int8_quantizes_matrix_products_only(hf_ctc_folder, tmp_path, family, speech):
    if family != "base":
        pytest.skip("one family is enough to check the int8 graph; both share the transformer")
    out = tmp_path / "int8"
    result = export(
        "onnx", "--model", str(hf_ctc_folder), "--out", str(out), "--quantize", "int8", "--verify-audio", *speech
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "int8 overall" in result.stdout
    ops = {node.op_type for node in onnx.load(str(out / "model.onnx")).graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops
    assert "QAttention" in ops, "the fused attention's q/k/v product is quantised too"
    assert "Conv" in ops and "ConvInteger" not in ops, "the feature encoder must stay in float"
    # KEEP_FLOAT_MODULES: the first block's attention and the output layer stay float, the rest is int8
    graph = onnx.load(str(out / "model.onnx")).graph

    def attention(layer: int) -> str:  # the quantiser renames the nodes it replaces
        (kind,) = [
            n.op_type for n in graph.node if n.name.startswith(f"model.wav2vec2.encoder.layers.{layer}.attention")
        ]
        return kind

    assert attention(0) == "Attention" and attention(1) == "QAttention"
    (logits_producer,) = [node for node in graph.node if "logits" in node.output]
    producers = {output: node for node in graph.node for output in node.output}
    head = next(producers[name] for name in logits_producer.input if name in producers)
    assert head.op_type == "MatMul", "the output layer's product stays float"
    summary = json.loads((out / "export.json").read_text())["verification"]["int8"]
    assert 0.9 <= summary["frame_agreement"] <= 1.0
    assert summary["transcripts"] == 5 + 4 + 2 * len(speech)  # lengths alone, a padded batch, real audio both ways


@pytest.fixture(scope="module")
def fp16_folder(hf_ctc_folder, tmp_path_factory, family) -> Path:
    out = tmp_path_factory.mktemp(f"fp16-{family}") / "fp16"
    result = export("onnx", "--model", str(hf_ctc_folder), "--out", str(out), "--fp16")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_fp16_keeps_io_and_layer_norms_in_float32(fp16_folder, family):
    if family != "large":
        pytest.skip("checked on the layer-norm family, which has the most normalisations")
    graph = onnx.load(str(fp16_folder / "model.onnx"))
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert graph.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = {weight.name: weight.data_type for weight in graph.graph.initializer}
    matmul_weights = [
        name for node in graph.graph.node if node.op_type == "MatMul" for name in node.input if name in weights
    ]
    assert matmul_weights and all(weights[name] == onnx.TensorProto.FLOAT16 for name in matmul_weights)
    norms = [node for node in graph.graph.node if node.op_type == "LayerNormalization"]
    assert norms and all(weights.get(node.input[1], onnx.TensorProto.FLOAT) == onnx.TensorProto.FLOAT for node in norms)
    summary = json.loads((fp16_folder / "export.json").read_text())["verification"]["fp16"]
    assert summary["frame_agreement"] >= 0.98


def test_fp16_never_counts_samples_in_half_precision(fp16_folder):
    """fp16 tops out at 65504 (4 s of 16 kHz audio), so sample counts, lengths and the first layer's
    statistics over all samples must stay integer or float32. (A CPU runs fp16 graphs largely in
    float32, so only a GPU shows the damage: see test_fp16_on_cuda_matches_fp32.)"""
    for path in sorted(fp16_folder.glob("*.onnx")):
        graph = onnx.load(str(path))  # the converter's value_info records each value's type
        types = {
            value.name: value.type.tensor_type.elem_type
            for value in [*graph.graph.value_info, *graph.graph.input, *graph.graph.output]
        }
        assert not [node.name for node in graph.graph.node if node.op_type == "Floor"], path.name
        sums = {node.name: types.get(node.output[0]) for node in graph.graph.node if node.op_type == "ReduceSum"}
        assert all(kind in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64) for kind in sums.values()), (
            path.name,
            sums,
        )
        if path.name == "model.batched.onnx":  # the masked statistics: a count and two sums over all samples
            assert len(sums) >= 3


def test_fairseq_checkpoint_exports(hf_ctc_folder, tmp_path, family):
    if family != "base":
        pytest.skip("the fairseq path is the same for both families once loaded")
    hf_model = transformers.Wav2Vec2ForCTC.from_pretrained(hf_ctc_folder).eval()
    checkpoint = write_fairseq_checkpoint(tmp_path / "checkpoint.pt", family, hf_model, old_style=False)
    result = export("onnx", "--model", str(checkpoint), "--out", str(tmp_path / "onnx"))
    assert result.returncode == 0, result.stderr[-3000:]
    audio = np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32)
    with torch.no_grad():
        expected = hf_model(torch.from_numpy(audio)).logits.numpy()
    assert np.abs(OnnxRecognizer(tmp_path / "onnx").run(audio) - expected).max() < 1e-3


def test_failed_verification_writes_nothing(hf_ctc_folder, tmp_path, family):
    if family != "base":
        pytest.skip("one family is enough: a failed verification is handled alike for both")
    out = tmp_path / "strict"
    result = export("onnx", "--model", str(hf_ctc_folder), "--out", str(out), "--tolerance", "1e-12")
    assert result.returncode == 1
    assert "verification failed: fp32 export differs from PyTorch" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_arguments_are_refused(hf_ctc_folder, tmp_path):
    result = export("onnx", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "x"))
    assert result.returncode == 1 and "not found" in result.stderr and result.stderr.count("\n") == 1
    result = export("onnx", "--model", str(hf_ctc_folder), "--out", str(tmp_path / "x"), "--fp16", "--quantize", "int8")
    assert result.returncode == 2 and "choose one" in result.stderr


GPU_PROVIDERS = set(onnxruntime.get_available_providers())


def tensorrt_usable() -> bool:
    try:
        check_tensorrt()
    except TensorRTUnavailable:
        return False
    return True


def test_tensorrt_without_a_gpu_says_what_is_missing(fp32_folder):
    if tensorrt_usable():
        pytest.skip("this machine has TensorRT")
    result = export("tensorrt", "--onnx", str(fp32_folder / "model.onnx"))
    assert result.returncode == 1 and result.stderr.strip().startswith("error:")
    if "TensorrtExecutionProvider" in GPU_PROVIDERS:  # onnxruntime-gpu without TensorRT's libraries
        assert "libnvinfer" in result.stderr and "not installed" in result.stderr
    else:
        assert "TensorRT needs an NVIDIA GPU" in result.stderr and "CPUExecutionProvider" in result.stderr


@pytest.mark.skipif(not tensorrt_usable(), reason="needs an NVIDIA GPU with TensorRT")
def test_tensorrt_engine_matches_cpu(fp32_folder):
    result = export("tensorrt", "--onnx", str(fp32_folder / "model.onnx"), "--max-batch", "2", "--max-seconds", "5")
    assert result.returncode == 0, result.stderr[-3000:]
    assert any((fp32_folder / "tensorrt").iterdir())
    from export.tensorrt import TensorRTProfile, tensorrt_providers

    engine = OnnxRecognizer(
        fp32_folder,
        providers=tensorrt_providers(fp32_folder, TensorRTProfile(max_batch=2, max_seconds=5), ["input_values"], 16000),
    )
    audio = [np.random.default_rng(1).standard_normal(32000).astype(np.float32)]
    cpu = OnnxRecognizer(fp32_folder).logits(audio)[0]
    assert engine.session.get_providers()[0] == "TensorrtExecutionProvider", "onnxruntime fell back"
    gpu = engine.logits(audio)[0]
    assert (cpu.argmax(-1) == gpu.argmax(-1)).mean() > 0.98


@pytest.mark.skipif("CUDAExecutionProvider" not in GPU_PROVIDERS, reason="needs an NVIDIA GPU with onnxruntime-gpu")
def test_cuda_provider_matches_cpu(fp32_folder):
    audio = [np.random.default_rng(2).standard_normal(48000).astype(np.float32)]
    cpu = OnnxRecognizer(fp32_folder).logits(audio)[0]
    exact = OnnxRecognizer(fp32_folder, providers=[("CUDAExecutionProvider", {"use_tf32": 0})])
    assert exact.session.get_providers()[0] == "CUDAExecutionProvider", "onnxruntime fell back to the CPU"
    assert np.abs(exact.logits(audio)[0] - cpu).max() < 1e-3
    # onnxruntime's default on Ampere and later: TF32 matmuls, faster, logits ~1e-2 apart, same frames
    fast = OnnxRecognizer(fp32_folder, providers=["CUDAExecutionProvider"]).logits(audio)[0]
    assert (fast.argmax(-1) == cpu.argmax(-1)).mean() > 0.98


@pytest.mark.skipif("CUDAExecutionProvider" not in GPU_PROVIDERS, reason="needs an NVIDIA GPU with onnxruntime-gpu")
def test_fp16_on_cuda_matches_fp32(fp16_folder, fp32_folder):
    generator = np.random.default_rng(3)
    audio = [0.1 * generator.standard_normal(seconds * 16000).astype(np.float32) for seconds in (20, 3)]
    cpu = [OnnxRecognizer(fp32_folder).logits([samples])[0] for samples in audio]
    for name in sorted(path.name for path in fp16_folder.glob("*.onnx")):
        engine = OnnxRecognizer(fp16_folder, providers=["CUDAExecutionProvider"], model_file=name)
        assert engine.session.get_providers()[0] == "CUDAExecutionProvider"
        got = engine.logits(audio) if engine.uses_attention_mask else [engine.logits([a])[0] for a in audio]
        for half, full in zip(got, cpu):
            assert (half.argmax(-1) == full.argmax(-1)).mean() > 0.95, name

"""Graph optimisation of exports: fused attention (export.fusion) and the padding branch
(export.branching), checked numerically with onnxruntime against the graphs they replace."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import helper, numpy_helper

from export.branching import exact_only_when_padded
from export.exporter import export_fp32
from export.fusion import append_frame_lengths, fuse_attention, optimize_graph
from export.norm_folding import fold_instance_norm_affine
from model.config import conv_output_length
from model.onnx import OnnxRecognizer
from model.pytorch.checkpoint import load_checkpoint


def session(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def padded_batch(lengths: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    values = np.zeros((len(lengths), max(lengths)), np.float32)
    mask = np.zeros(values.shape, np.int64)
    for row, length in enumerate(lengths):
        values[row, :length] = 0.1 * generator.standard_normal(length)
        mask[row, :length] = 1
    return values, mask


def test_frame_lengths_follow_the_convolutions_exactly(tmp_path):
    """Every sample count, including rows shorter than one kernel, gives the model's frame count."""
    layers = [(10, 5), (3, 2), (3, 2), (2, 2)]
    graph = helper.make_graph(
        [],
        "lengths",
        [helper.make_tensor_value_info("attention_mask", onnx.TensorProto.INT64, ["batch", "samples"])],
        [],
    )
    name = append_frame_lengths(graph, layers)
    graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.INT32, ["batch"]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10  # what onnxruntime 1.31 reads
    onnx.save(model, str(tmp_path / "lengths.onnx"))
    samples = np.arange(0, 400)
    mask = (np.arange(400)[None, :] < samples[:, None]).astype(np.int64)
    (got,) = session(tmp_path / "lengths.onnx").run(None, {"attention_mask": mask})
    expected = samples.copy()
    for kernel, stride in layers:
        expected = np.maximum(conv_output_length(expected, kernel, stride), 0)
    assert got.dtype == np.int32 and (got == expected).all()
    assert (got[:20] == 0).all() and got[-1] > 0


@pytest.fixture(scope="module")
def unfused(hf_ctc_folder, tmp_path_factory):
    """The tiny model's plain and padding-exact graphs as the exporter writes them, before optimisation."""
    checkpoint = load_checkpoint(hf_ctc_folder)
    folder = tmp_path_factory.mktemp("unfused")
    return (
        checkpoint,
        export_fp32(checkpoint, folder / "plain.onnx"),
        export_fp32(checkpoint, folder / "exact.onnx", batched=True),
    )


def test_fused_attention_matches_the_exported_operators(unfused, tmp_path):
    checkpoint, plain, exact = unfused
    config = checkpoint.config
    layers = list(zip(config.conv_kernel, config.conv_stride))
    values, mask = padded_batch([16000, 9000, 3000])
    for source in (plain, exact):
        takes_mask = "attention_mask" in {given.name for given in session(source).get_inputs()}
        feeds = {"input_values": values, **({"attention_mask": mask} if takes_mask else {})}
        fused = tmp_path / f"fused-{source.name}"
        fused.write_bytes(source.read_bytes())
        assert optimize_graph(fused, config.num_attention_heads, layers) == config.num_hidden_layers
        graph = onnx.load(str(fused))
        kinds = [node.op_type for node in graph.graph.node]
        assert kinds.count("Attention") == config.num_hidden_layers and "Softmax" not in kinds
        (expected,), (got,) = session(source).run(None, feeds), session(fused).run(None, feeds)
        assert np.abs(expected - got).max() < 1e-4


def test_first_layer_norm_affine_joins_instance_norm(unfused, tmp_path):
    """The group norm's gamma and beta move into InstanceNormalization: no Mul/Add pass, same logits."""
    _, plain, _ = unfused
    model = onnx.load(str(plain))
    if "InstanceNormalization" not in {node.op_type for node in model.graph.node}:
        pytest.skip("the layer-norm family has no group norm")
    # A fresh model's gamma is 1 and beta 0; give them values so that a lost affine would show.
    generator = np.random.default_rng(3)
    for tensor in model.graph.initializer:
        array = numpy_helper.to_array(tensor)
        if array.ndim == 2 and array.shape[1] == 1:
            varied = (1 + generator.standard_normal(array.shape)).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(varied, tensor.name))
    source = tmp_path / "affine.onnx"
    onnx.save(model, str(source))
    assert fold_instance_norm_affine(model.graph) == 1
    onnx.checker.check_model(model)
    folded = tmp_path / "folded.onnx"
    onnx.save(model, str(folded))
    kinds = [node.op_type for node in model.graph.node]
    norm = kinds.index("InstanceNormalization")
    assert kinds[norm + 1] == "Gelu" and "Mul" not in kinds[: norm + 1]
    values, _ = padded_batch([16000, 16000], seed=4)
    (expected,), (got,) = (session(path).run(None, {"input_values": values}) for path in (source, folded))
    assert np.abs(expected - got).max() < 1e-4
    assert fold_instance_norm_affine(model.graph) == 0, "a folded graph has nothing left to fold"


def test_fusion_refuses_a_graph_without_attention_projections(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph)
    assert fuse_attention(model, 2) == 0
    assert [node.op_type for node in model.graph.node] == ["Relu"]
    with pytest.raises(ValueError, match="attention_mask"):
        append_frame_lengths(model.graph, [(3, 2)])


def test_exact_graph_runs_plain_branch_only_without_padding(unfused, tmp_path):
    """The joined graph: unpadded batches equal the plain graph; padded rows equal each utterance alone."""
    checkpoint, plain, exact = unfused
    if "attention_mask" in {given.name for given in session(plain).get_inputs()}:
        pytest.skip("the layer-norm family has one graph, with a mask; nothing to join")
    joined = exact_only_when_padded(plain, exact, tmp_path / "joined.onnx")
    graph = onnx.load(str(joined))
    assert [node.op_type for node in graph.graph.node][-1] == "If"
    # one copy of the weights: the joined file is not much bigger than one graph
    assert joined.stat().st_size < 1.2 * exact.stat().st_size
    runner = session(joined)
    values, _ = padded_batch([8000, 8000], seed=1)
    ones = np.ones(values.shape, np.int64)
    (expected,), (got,) = (
        session(plain).run(None, {"input_values": values}),
        runner.run(None, {"input_values": values, "attention_mask": ones}),
    )
    assert np.abs(expected - got).max() < 1e-5
    values, mask = padded_batch([12000, 4000], seed=2)
    (batch,) = runner.run(None, {"input_values": values, "attention_mask": mask})
    (alone,) = runner.run(None, {"input_values": values[1:, :4000], "attention_mask": mask[1:, :4000]})
    frames = alone.shape[1]
    assert np.abs(batch[1, :frames] - alone[0]).max() < 1e-4
    # the unpadded branch would let the padding in: the rows differ from the plain graph's
    (leaky,) = session(plain).run(None, {"input_values": values})
    assert np.abs(leaky[1, :frames] - alone[0]).max() > 1e-3


def test_export_writes_fused_graphs(exported_folder, family):
    manifest = json.loads((exported_folder / "export.json").read_text())
    assert manifest["fused_attention"] is True
    for path in sorted(exported_folder.glob("*.onnx")):
        kinds = [node.op_type for node in onnx.load(str(path)).graph.node]
        joined = kinds == ["ReduceMin", "Equal", "If"]
        assert joined or "Attention" in kinds, path.name
        assert joined == (path.name == "model.batched.onnx"), path.name
    if family != "large":
        assert manifest["verification"]["batched"]["joined"]["max_abs_diff"] < 1e-3
    recognizer = OnnxRecognizer(exported_folder)
    assert len(recognizer.logits([np.zeros(8000, np.float32)])[0]) == recognizer.config.num_frames(8000)

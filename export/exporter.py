"""PyTorch -> ONNX, and the int8 and fp16 variants derived from the fp32 graph."""

from __future__ import annotations

import collections
import copy
import logging
import re
from pathlib import Path

import onnx  # graph loading, checking and the small edits below
import torch
from torch import nn
from torch.nn.utils import parametrize

from model.pytorch.checkpoint import Checkpoint
from model.pytorch.wav2vec2 import Wav2Vec2ForCTC

# ONNX protobufs cannot exceed 2 GB; only larger models get their weights in a side file.
PROTOBUF_LIMIT = 2 * 1024**3
# Normalisations stay in float32 in the fp16 variant: their variance sums overflow or lose precision in fp16.
# The first conv layer's module path as it ends a node's scope in the exporter's metadata ("...0:" or "...0.conv:")
FIRST_CONV_LAYER = re.compile(r"feature_extractor\.conv_layers\.0[.:]")
FP16_KEEP_FLOAT32 = ["LayerNormalization", "GroupNormalization", "InstanceNormalization"]


class _OnnxInterface(nn.Module):
    """The exported signature: logits = f(input_values[, attention_mask])."""

    def __init__(self, model: Wav2Vec2ForCTC, uses_attention_mask: bool):
        super().__init__()
        self.model = model
        self.uses_attention_mask = uses_attention_mask

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_values, attention_mask if self.uses_attention_mask else None)


def inference_copy(model: Wav2Vec2ForCTC) -> Wav2Vec2ForCTC:
    """A copy in eval mode with the positional convolution's weight norm folded into a plain weight."""
    folded = Wav2Vec2ForCTC(model.config)
    folded.load_state_dict(model.state_dict())
    conv = folded.wav2vec2.encoder.pos_conv_embed.conv
    parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
    return folded.eval()


def export_fp32(checkpoint: Checkpoint, path: Path, opset: int | None = None, batched: bool = False) -> Path:
    """Write the fp32 graph with dynamic batch and sample axes.

    `batched` writes the group-norm family's graph for padded batches: it takes an attention mask
    and keeps padding out of the feature encoder's statistics and out of attention, so each row
    equals its utterance run alone (the plain graph, like transformers, lets padding change them).
    """
    uses_mask = checkpoint.features.return_attention_mask or batched
    module = _OnnxInterface(inference_copy(checkpoint.model), uses_mask).eval()
    example = torch.randn(2, 2 * checkpoint.config.receptive_field + 1000)
    batch = torch.export.Dim("batch")
    samples = torch.export.Dim("samples", min=checkpoint.config.receptive_field)
    arguments: tuple[torch.Tensor, ...] = (example,)
    shapes = {"input_values": {0: batch, 1: samples}}
    names = ["input_values"]
    if uses_mask:
        arguments += (torch.ones(example.shape, dtype=torch.int64),)
        shapes["attention_mask"] = {0: batch, 1: samples}
        names.append("attention_mask")
    large = sum(p.numel() * p.element_size() for p in module.parameters()) > PROTOBUF_LIMIT
    program = torch.onnx.export(
        module,
        arguments,
        input_names=names,
        output_names=["logits"],
        dynamic_shapes=shapes,
        opset_version=opset,
        dynamo=True,
        external_data=large,
        verbose=False,
    )
    program.save(str(path), external_data=large)
    graph = onnx.load(str(path), load_external_data=False)
    for dim, name in zip(graph.graph.output[0].type.tensor_type.shape.dim, ("batch", "frames")):
        dim.dim_param = name  # the exporter names the frame axis with its length formula
    onnx.save(graph, str(path))
    return path


# Matrix products that int8 leaves in float32 (module paths as the exporter records them on nodes):
# the feature projection (the most sensitive single product when quantised alone), the first
# transformer block (whose error every later block carries) and the output layer. On the digits
# model this keeps WER equal to fp32 on FSDD test and digits-multi dev where quantising everything
# lost 0.43 points (bench/int8_accuracy.py); on wav2vec2-base it is ~1/12 of the products' work.
KEEP_FLOAT_MODULES = (
    "model.wav2vec2.feature_projection",
    "model.wav2vec2.encoder.layers.0",
    "model.lm_head",
)
SCOPES_KEY = "pkg.torch.onnx.name_scopes"  # the exporter's record of each node's module path


def nodes_in_modules(path: Path, modules: tuple[str, ...]) -> list[str]:
    """Names of the nodes of the graph at `path` made by any of `modules` (or their submodules).

    A node's module is the exporter's scope metadata, or for a fused node (export.fusion) its name.
    """
    graph = onnx.load(str(path), load_external_data=False).graph

    def inside(scope: str) -> bool:
        return any(scope == module or scope.startswith(module + ".") for module in modules)

    found = []
    for node in graph.node:
        scopes = [
            scope.strip("'\" ")
            for prop in node.metadata_props
            if prop.key == SCOPES_KEY
            for scope in prop.value.strip("[]").split(",")
        ]
        if any(inside(scope) for scope in scopes) or inside(node.name):
            found.append(node.name)
    return found


def quantize_int8(
    source: Path,
    target: Path,
    per_channel: bool = True,
    calibration: list | None = None,
    keep_float: tuple[str, ...] = KEEP_FLOAT_MODULES,
) -> Path:
    """Int8 quantisation of the weight matrix products; the convolutional feature encoder stays
    float, since quantising it costs wav2vec 2.0 much accuracy.

    Dynamic by default (activation ranges taken on each call); `calibration`, a list of the graph's
    feeds ({"input_values": (1, samples) float32[, "attention_mask": ...]}, prepared as for
    inference), makes it static: activation ranges fixed from running those (QDQ format).
    `per_channel`: one weight scale per output column instead of one per matrix. The default: on
    the digits model's digits-multi dev set it lost 0.43 WER points to fp32 where one scale per
    matrix lost 1.28, at the same speed (bench/int8_accuracy.py, docs/performance.md).
    `keep_float`: module paths whose products stay float32 (KEEP_FLOAT_MODULES; () quantises all).
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    # The quantizer suggests (on the root logger) a shape-inference pass that dynamic quantisation does not need.
    logging.getLogger().setLevel(logging.ERROR)
    # Only products with a weight operand: the attention products of two activations stay float,
    # which is both more accurate and (measured) faster than quantising both operands on every call.
    # A fused Attention node (export.fusion) holds the q/k/v product: it becomes QAttention.
    operators = ["MatMul", "Gemm", "Attention"]
    options = {"MatMulConstBOnly": True}
    excluded = nodes_in_modules(source, keep_float) if keep_float else []
    if calibration is None:
        quantize_dynamic(
            str(source),
            str(target),
            op_types_to_quantize=operators,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            nodes_to_exclude=excluded,
            extra_options=options,
        )
        return target
    quantize_static(
        str(source),
        str(target),
        _CalibrationReader(calibration),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=["MatMul", "Gemm"],
        per_channel=per_channel,
        nodes_to_exclude=excluded,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        extra_options=options,
    )
    return target


class _CalibrationReader:
    """The calibration feeds, one run at a time, as onnxruntime's static quantizer reads them."""

    def __init__(self, feeds: list[dict]):
        self.feeds = feeds
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.feeds):
            return None
        self.position += 1
        return self.feeds[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def convert_fp16(source: Path, target: Path) -> Path:
    """fp16 weights and arithmetic for GPUs; inputs, outputs and normalisations stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    graph = _unshare_initializers(onnx.load(str(source)))
    # The first conv layer's statistics sum over up to every sample of the input (masked in the batched
    # graph, written with plain ops the op list cannot catch): far beyond fp16's range of 65504.
    first_layer = [
        node.name
        for node in graph.graph.node
        if any(prop.key == "namespace" and FIRST_CONV_LAYER.search(prop.value) for prop in node.metadata_props)
    ]
    half = convert_float_to_float16(
        graph, keep_io_types=True, op_block_list=FP16_KEEP_FLOAT32, node_block_list=first_layer
    )
    onnx.save(_join_float32_chains(half), str(target))
    return target


def _join_float32_chains(graph: onnx.ModelProto) -> onnx.ModelProto:
    """Let blocked nodes feed each other in float32.

    The fp16 converter wraps every blocked node on its own: float16 -> float32 before it, float32 -> float16
    after it, so a chain of blocked nodes still rounds (and overflows) through float16 between each pair.
    Here a consumer reads the producer's float32 output directly; casts left without readers go, as do
    the identical copies of one cast the converter adds for each blocked consumer of a float16 value.
    """
    nodes = graph.graph.node
    float32_source = {
        node.output[0]: node.input[0]
        for node in nodes  # fp16 value -> its fp32 original
        if node.op_type == "Cast" and node.name.endswith("_cast_to_fp16_node")
    }
    replace = {
        node.output[0]: float32_source[node.input[0]]
        for node in nodes
        if node.op_type == "Cast" and node.name.endswith("_cast_to_fp32_node") and node.input[0] in float32_source
    }
    for node in nodes:
        node.input[:] = [replace.get(name, name) for name in node.input]
    graph_outputs = {output.name for output in graph.graph.output}
    seen: set[str] = set()
    kept = []
    for node in nodes:
        if (
            node.op_type == "Cast"
            and node.name.endswith("_cast_to_fp32_node")
            and (node.output[0] in replace or node.output[0] in seen)
        ):
            continue
        seen.update(node.output)
        kept.append(node)
    read = {name for node in kept for name in node.input} | graph_outputs
    kept = [
        node
        for node in kept
        if not (node.op_type == "Cast" and node.name.endswith("_cast_to_fp16_node") and node.output[0] not in read)
    ]
    del graph.graph.node[:]
    graph.graph.node.extend(kept)
    return graph


def _unshare_initializers(graph: onnx.ModelProto) -> onnx.ModelProto:
    """Give every use of a weight its own copy.

    The exporter deduplicates equal weights (e.g. all-ones norm scales); the fp16 converter then
    names the float32 casts it adds per weight twice, and the graph becomes invalid.
    """
    weights = {weight.name: weight for weight in graph.graph.initializer}
    uses: collections.Counter[str] = collections.Counter()
    for node in graph.graph.node:
        for position, name in enumerate(node.input):
            if name not in weights:
                continue
            uses[name] += 1
            if uses[name] > 1:
                duplicate = copy.deepcopy(weights[name])
                duplicate.name = f"{name}.use{uses[name]}"
                graph.graph.initializer.append(duplicate)
                node.input[position] = duplicate.name
    return graph

"""Graph-level optimisation of an exported fp32 graph: each self-attention block becomes one fused
`com.microsoft.Attention` node of ONNX Runtime.

The exporter writes attention as separate q/k/v products, head reshapes and transposes, a scaled
product, softmax and (in the padding-exact graph) boolean masking with NaN guards around the
softmax. ONNX Runtime's offline transformer optimizer does not recognise that pattern, and its
online optimisations fuse only the layer norms and GELUs. The fused node does one (hidden, 3 *
hidden) product for q, k and v and the per-head attention in one kernel; in the padding-exact
graph it takes each row's real frame count (`mask_index`), so padded keys get no weight, as before.

Nodes are found by the module path the exporter records on each node (`pkg.torch.onnx.name_scopes`):
`...layers.N.attention.{q,k,v,out}_proj`, so the rewrite follows our own module names, not the shape
of a particular exporter's decomposition.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .norm_folding import fold_instance_norm_affine

MICROSOFT_DOMAIN = "com.microsoft"
SCOPES_KEY = "pkg.torch.onnx.name_scopes"
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "out_proj")
PROTOBUF_LIMIT = 2 * 1024**3  # as in export.exporter: larger models keep their weights in a side file


class FusionError(ValueError):
    """The graph does not have the attention structure the fusion expects."""


def _scopes(node: onnx.NodeProto) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == SCOPES_KEY:
            return [scope.strip("'\" ") for scope in prop.value.strip("[]").split(",")]
    return []


def _attention_blocks(graph: onnx.GraphProto) -> dict[str, dict[str, list[onnx.NodeProto]]]:
    """{attention module path: {projection name: its nodes in graph order}}."""
    blocks: dict[str, dict[str, list[onnx.NodeProto]]] = defaultdict(lambda: defaultdict(list))
    for node in graph.node:
        for scope in _scopes(node):
            module, _, leaf = scope.rpartition(".")
            if leaf in PROJECTIONS and module.endswith(".attention"):
                blocks[module][leaf].append(node)
                break
    return blocks


def _linear(
    nodes: list[onnx.NodeProto], weights: dict[str, np.ndarray], where: str
) -> tuple[str, np.ndarray, np.ndarray | None, str]:
    """One projection's (input, weight (in, out), bias (out,) or None, output tensor)."""
    products = [node for node in nodes if node.op_type == "MatMul"]
    if len(products) != 1 or products[0].input[1] not in weights:
        raise FusionError(f"{where}: expected one MatMul with a constant weight")
    product = products[0]
    adds = [node for node in nodes if node.op_type == "Add" and product.output[0] in node.input]
    if not adds:
        return product.input[0], weights[product.input[1]], None, product.output[0]
    add = adds[0]
    bias_name = next(name for name in add.input if name != product.output[0])
    if bias_name not in weights:
        raise FusionError(f"{where}: the bias is not a constant")
    return product.input[0], weights[product.input[1]], weights[bias_name], add.output[0]


def append_frame_lengths(graph: onnx.GraphProto, conv_layers: list[tuple[int, int]]) -> str:
    """Nodes giving each row's real frame count, int32 (batch,), from the `attention_mask` input.

    The same integer arithmetic as the model's: the sample count, then for each (kernel, stride)
    convolution floor((length - kernel) / stride) + 1, never below 0 (written as max(length - kernel
    + stride, 0) // stride, whose operands are non-negative, so ONNX's truncating Div floors).
    """
    if "attention_mask" not in {given.name for given in graph.input}:
        raise FusionError("the graph has no attention_mask input to count real frames from")
    prefix = "fusion_frame_lengths"
    zero = numpy_helper.from_array(np.array(0, dtype=np.int64), f"{prefix}_zero")
    axis = numpy_helper.from_array(np.array([1], dtype=np.int64), f"{prefix}_axis")
    graph.initializer.extend([zero, axis])
    nodes = [helper.make_node("ReduceSum", ["attention_mask", axis.name], [f"{prefix}_samples"], keepdims=0)]
    length = f"{prefix}_samples"
    for index, (kernel, stride) in enumerate(conv_layers):
        shift = numpy_helper.from_array(np.array(stride - kernel, dtype=np.int64), f"{prefix}_shift{index}")
        divisor = numpy_helper.from_array(np.array(stride, dtype=np.int64), f"{prefix}_stride{index}")
        graph.initializer.extend([shift, divisor])
        nodes += [
            helper.make_node("Add", [length, shift.name], [f"{prefix}_shifted{index}"]),
            helper.make_node("Max", [f"{prefix}_shifted{index}", zero.name], [f"{prefix}_clamped{index}"]),
            helper.make_node("Div", [f"{prefix}_clamped{index}", divisor.name], [f"{prefix}_layer{index}"]),
        ]
        length = f"{prefix}_layer{index}"
    nodes.append(helper.make_node("Cast", [length], [prefix], to=onnx.TensorProto.INT32))
    existing = list(graph.node)  # first, so that the graph stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes + existing)
    return prefix


def fuse_attention(model: onnx.ModelProto, num_heads: int, frame_lengths: str | None = None) -> int:
    """Replace every attention block by one Attention node; returns how many were fused.

    `frame_lengths`: an int32 (batch,) tensor of real frames per row (see append_frame_lengths), for
    the padding-exact graph; None for the plain graph, whose attention sees every frame.
    """
    graph = model.graph
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    fused = []
    for module, parts in sorted(_attention_blocks(graph).items()):
        if set(parts) != set(PROJECTIONS):
            raise FusionError(f"{module}: found only {', '.join(sorted(parts))}")
        linears = {name: _linear(parts[name], weights, f"{module}.{name}") for name in PROJECTIONS[:3]}
        inputs = {source for source, _, _, _ in linears.values()}
        if len(inputs) != 1:
            raise FusionError(f"{module}: q, k and v read different inputs; only self-attention is fused")
        hidden = linears["q_proj"][1].shape[0]
        weight = np.concatenate([linears[name][1] for name in PROJECTIONS[:3]], axis=1).astype(np.float32)
        bias = np.concatenate(
            [
                linears[name][2] if linears[name][2] is not None else np.zeros(hidden, np.float32)
                for name in PROJECTIONS[:3]
            ]
        ).astype(np.float32)
        out_product = next(node for node in parts["out_proj"] if node.op_type == "MatMul")
        name = f"{module}.fused"
        graph.initializer.extend(
            [numpy_helper.from_array(weight, f"{name}.qkv_weight"), numpy_helper.from_array(bias, f"{name}.qkv_bias")]
        )
        node_inputs = [inputs.pop(), f"{name}.qkv_weight", f"{name}.qkv_bias"]
        if frame_lengths is not None:
            node_inputs.append(frame_lengths)
        # The output keeps the name out_proj reads, so its producer (the old head merge) becomes unused.
        fused.append(
            (
                out_product.input[0],
                helper.make_node(
                    "Attention",
                    node_inputs,
                    [out_product.input[0]],
                    name=name,
                    domain=MICROSOFT_DOMAIN,
                    num_heads=num_heads,
                ),
            )
        )
    if not fused:
        return 0
    replaced = {output for output, _ in fused}
    # Insert each fused node where the old output's producer stood, keeping the graph topologically sorted.
    order = {output: node for output, node in fused}
    rebuilt = []
    for node in graph.node:
        produced = set(node.output) & replaced
        if produced:
            rebuilt.append(order[produced.pop()])
        else:
            rebuilt.append(node)
    del graph.node[:]
    graph.node.extend(rebuilt)
    _remove_unused(graph)
    if not any(entry.domain == MICROSOFT_DOMAIN for entry in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MICROSOFT_DOMAIN, 1))
    return len(fused)


def optimize_graph(path: Path, num_heads: int, conv_layers: list[tuple[int, int]]) -> int:
    """Fuse the attention blocks of the fp32 graph at `path` in place; returns how many were fused.

    A graph with an `attention_mask` input gets each row's frame count from it (conv_layers: the
    feature encoder's (kernel, stride) pairs), so its fused attention keeps padded frames out. The
    first conv layer's group-norm affine joins its InstanceNormalization (export.norm_folding).
    """
    model = onnx.load(str(path))
    inputs = {given.name for given in model.graph.input}
    lengths = append_frame_lengths(model.graph, conv_layers) if "attention_mask" in inputs else None
    fused = fuse_attention(model, num_heads, lengths)
    fold_instance_norm_affine(model.graph)  # the first conv layer's norm, in the graphs that have one
    if lengths is not None and not fused:
        _remove_unused(model.graph)  # the frame counts, if nothing reads them
    large = model.ByteSize() > PROTOBUF_LIMIT
    onnx.save(model, str(path), save_as_external_data=large, location=f"{path.name}.data" if large else None)
    return fused


def _remove_unused(graph: onnx.GraphProto) -> None:
    """Drop nodes whose outputs nothing reads, repeatedly, then initializers nothing reads."""
    outputs = {output.name for output in graph.output}
    while True:
        read = outputs | {name for node in graph.node for name in node.input}
        kept = [node for node in graph.node if any(name in read for name in node.output)]
        if len(kept) == len(graph.node):
            break
        del graph.node[:]
        graph.node.extend(kept)
    read = {name for node in graph.node for name in node.input}
    initializers = [tensor for tensor in graph.initializer if tensor.name in read]
    del graph.initializer[:]
    graph.initializer.extend(initializers)

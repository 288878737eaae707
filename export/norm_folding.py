"""Fold the first conv layer's group-norm affine into ONNX Runtime's InstanceNormalization.

The exporter writes wav2vec 2.0's first-layer GroupNorm (one group per channel) as
Reshape -> InstanceNormalization(scale 1, bias 0) -> Reshape -> Mul(gamma) -> Add(beta): two extra
passes over the largest tensor of the model, (batch, channels, samples / stride), ~1.5% of the
time of wav2vec2-base at 15 s (an ONNX Runtime profile, docs/performance.md). InstanceNormalization
takes a per-channel scale and bias itself, so the rewrite reads the conv output directly and
applies gamma and beta in its one pass. Same arithmetic, so logits change only by rounding.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _only_reader(readers: dict, name: str, op_type: str) -> onnx.NodeProto | None:
    found = readers.get(name, [])
    return found[0] if len(found) == 1 and found[0].op_type == op_type else None


def fold_instance_norm_affine(graph: onnx.GraphProto) -> int:
    """Rewrite every Reshape -> InstanceNormalization(1, 0) -> Reshape -> Mul -> Add chain whose
    norm has one group per channel; returns how many were folded. Other graphs are left as they are."""
    weights = {tensor.name: tensor for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    readers = _consumers(graph)
    graph_outputs = {output.name for output in graph.output}
    folded = 0
    for norm in [node for node in graph.node if node.op_type == "InstanceNormalization"]:
        before = producers.get(norm.input[0])
        if before is None or before.op_type != "Reshape" or not all(name in weights for name in norm.input[1:3]):
            continue
        scale, bias = numpy_helper.to_array(weights[norm.input[1]]), numpy_helper.to_array(weights[norm.input[2]])
        after = _only_reader(readers, norm.output[0], "Reshape")
        mul = after and _only_reader(readers, after.output[0], "Mul")
        add = mul and _only_reader(readers, mul.output[0], "Add")
        if add is None or not (np.all(scale == 1) and np.all(bias == 0)):
            continue
        gamma_name = next((name for name in mul.input if name in weights), None)
        beta_name = next((name for name in add.input if name in weights), None)
        if gamma_name is None or beta_name is None or {after.output[0], mul.output[0]} & graph_outputs:
            continue
        gamma, beta = numpy_helper.to_array(weights[gamma_name]), numpy_helper.to_array(weights[beta_name])
        channels = scale.shape[0]
        # One group per channel: the norm's groups are the conv's channels, and gamma/beta are (channels, 1).
        if gamma.shape != (channels, 1) or beta.shape != (channels, 1):
            continue
        source = before.input[0]  # the (batch, channels, frames) tensor the first Reshape regrouped
        prefix = f"{norm.name or 'instance_norm'}.folded"
        graph.initializer.extend(
            [
                numpy_helper.from_array(gamma.reshape(channels).astype(scale.dtype), f"{prefix}.scale"),
                numpy_helper.from_array(beta.reshape(channels).astype(bias.dtype), f"{prefix}.bias"),
            ]
        )
        norm.input[:] = [source, f"{prefix}.scale", f"{prefix}.bias"]
        norm.output[0] = add.output[0]  # the Add's readers now read the norm
        for node in (before, after, mul, add):
            graph.node.remove(node)
        folded += 1
    if folded:
        _drop_unused_weights(graph)
    return folded


def _drop_unused_weights(graph: onnx.GraphProto) -> None:
    """Remove nodes nothing reads (the Shape that fed the second Reshape) and unread initializers."""
    outputs = {output.name for output in graph.output}
    while True:
        read = outputs | {name for node in graph.node for name in node.input}
        unused = [node for node in graph.node if not any(name in read for name in node.output)]
        if not unused:
            break
        for node in unused:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)

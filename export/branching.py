"""The padding-exact graph that pays for exactness only when a batch is padded.

The padding-exact graph keeps padding out of the first conv layer's statistics with a masked
norm written in plain operators (several passes over the model's largest tensor), and zeroes
padded frames before the positional convolution. On a batch without padding (one utterance, or
equal lengths: what a server mostly runs) the mask is all ones and the plain graph gives the same
numbers with ONNX Runtime's one-pass InstanceNormalization. So the served graph holds both, as the
two branches of one `If` on "every mask value is 1", sharing one copy of the weights.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

PROTOBUF_LIMIT = 2 * 1024**3  # as in export.exporter: larger models keep their weights in a side file


def _shared_weights(models: dict[str, onnx.ModelProto]) -> tuple[list[onnx.TensorProto], dict[str, dict[str, str]]]:
    """One initializer per distinct weight (same type, shape and bytes), and each model's renaming to them."""
    kept: list[onnx.TensorProto] = []
    by_content: dict[tuple, str] = {}
    renames: dict[str, dict[str, str]] = {}
    taken: set[str] = set()
    for prefix, model in models.items():
        renames[prefix] = {}
        for tensor in model.graph.initializer:
            array = numpy_helper.to_array(tensor)
            key = (array.dtype.str, array.shape, hashlib.sha256(array.tobytes()).hexdigest())
            if key not in by_content:
                name = tensor.name if tensor.name not in taken else f"{prefix}/{tensor.name}"
                copy = onnx.TensorProto()
                copy.CopyFrom(tensor)
                copy.name = name
                kept.append(copy)
                taken.add(name)
                by_content[key] = name
            renames[prefix][tensor.name] = by_content[key]
    return kept, renames


def _branch(model: onnx.ModelProto, prefix: str, outer: set[str], weights: dict[str, str]) -> onnx.GraphProto:
    """The model's nodes as a subgraph reading the outer graph's inputs and shared weights; every
    value it makes is prefixed, so the two branches' names never meet."""

    def rename(name: str) -> str:
        if not name or name in outer:
            return name
        return weights.get(name, f"{prefix}/{name}")

    nodes = []
    for index, node in enumerate(model.graph.node):
        if any(
            attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attribute in node.attribute
        ):
            raise ValueError(f"{node.name}: nested subgraphs are not supported here")
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{prefix}/{node.name or index}"
        copy.input[:] = [rename(name) for name in node.input]
        copy.output[:] = [rename(name) for name in node.output]
        del copy.metadata_props[:]
        nodes.append(copy)
    outputs = []
    for given in model.graph.output:
        output = onnx.ValueInfoProto()
        output.CopyFrom(given)
        output.name = rename(given.name)
        outputs.append(output)
    return helper.make_graph(nodes, f"{prefix}_branch", [], outputs)


def exact_only_when_padded(plain_path: Path, exact_path: Path, target: Path) -> Path:
    """Write to `target` the graph with exact_path's inputs that runs plain_path's graph when the
    attention mask is all ones and exact_path's otherwise. Both must have the same output."""
    plain, exact = onnx.load(str(plain_path)), onnx.load(str(exact_path))
    if [output.name for output in plain.graph.output] != [output.name for output in exact.graph.output]:
        raise ValueError("the plain and padding-exact graphs have different outputs")
    inputs = {given.name for given in exact.graph.input}
    if "attention_mask" not in inputs:
        raise ValueError(f"{exact_path} has no attention_mask input")
    weights, renames = _shared_weights({"exact": exact, "plain": plain})
    one = numpy_helper.from_array(np.array(1, dtype=np.int64), "branch_one")
    nodes = [
        helper.make_node("ReduceMin", ["attention_mask"], ["branch_mask_min"], keepdims=0),
        helper.make_node("Equal", ["branch_mask_min", one.name], ["branch_unpadded"]),
        helper.make_node(
            "If",
            ["branch_unpadded"],
            [output.name for output in exact.graph.output],
            name="padding",
            then_branch=_branch(plain, "plain", inputs, renames["plain"]),
            else_branch=_branch(exact, "exact", inputs, renames["exact"]),
        ),
    ]
    graph = helper.make_graph(
        nodes, exact.graph.name, list(exact.graph.input), list(exact.graph.output), initializer=[*weights, one]
    )
    opsets = {entry.domain: entry.version for model in (exact, plain) for entry in model.opset_import}
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()],
        producer_name=exact.producer_name,
        producer_version=exact.producer_version,
    )
    model.ir_version = exact.ir_version
    large = model.ByteSize() > PROTOBUF_LIMIT
    onnx.save(model, str(target), save_as_external_data=large, location=f"{target.name}.data" if large else None)
    return target

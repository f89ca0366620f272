"""The export formats: each turns a captured program into file bytes, and runs those bytes back.

Every format starts from the one torch.export capture, so the size-dependent arithmetic (the
TensorFlow "SAME" padding of EfficientNet-Lite, the pooling's map size) stays symbolic in it.
torch.jit.trace is not offered: it freezes that arithmetic at the traced size and is silently
wrong at any other (EfficientNet-Lite0: cosine 0.74-0.82 to the eager network).
"""

from __future__ import annotations

import importlib.util
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx
from torch.export import ExportedProgram

from retrieval.export.capture import ExportError

INPUT_NAME = "images"
OUTPUT_NAME = "descriptors"
ONNX_OPSET = 18

# Runs exported bytes on a B x 3 x H x W float32 array, giving B x D float32 descriptors.
Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ExportFormat:
    """How one format is written and run back: what it needs, its file suffix, and both ways."""

    packages: tuple[str, ...]  # importable modules the format needs (the `export` extra)
    suffix: str
    write: Callable[[ExportedProgram, dict[str, str]], bytes]  # program, metadata -> bytes
    load: Callable[[bytes], Runner]


def missing_packages(fmt: ExportFormat) -> list[str]:
    """The modules `fmt` needs that are not installed."""
    return [name for name in fmt.packages if importlib.util.find_spec(name) is None]


# ----------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------


def _onnx_bytes(program: ExportedProgram, metadata: dict[str, str]) -> bytes:
    """The ONNX model of the program (dynamo exporter), with `metadata` in its properties."""
    import onnx

    with warnings.catch_warnings():  # the exporter's notices about its own internals
        warnings.simplefilter("ignore")
        onnx_program = torch.onnx.export(
            program,
            (),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=ONNX_OPSET,
            dynamo=True,
            verbose=False,
        )
    proto = onnx_program.model_proto
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _onnx_runner(data: bytes) -> Runner:
    """An onnxruntime CPU session on the model bytes."""
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return lambda images: session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]


# ----------------------------------------------------------------------------------------------
# TorchScript
# ----------------------------------------------------------------------------------------------


def _torchscript_bytes(program: ExportedProgram, metadata: dict[str, str]) -> bytes:
    """The program's graph compiled by torch.jit.script (not traced: sizes stay symbolic)."""
    graph_module = scriptable_graph(program)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch.jit's deprecation and type-system notices
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(graph_module)
        torch.jit.save(scripted, buffer, _extra_files={"retrieval.json": json.dumps(metadata)})
    return buffer.getvalue()


def scriptable_graph(program: ExportedProgram) -> fx.GraphModule:
    """The program as a plain fx.GraphModule that torch.jit.script compiles.

    Three rewrites of the ATen graph, none changing what it computes: sizes are read with
    Tensor.size (script has no aten.sym_size), ops are called by their overload packet
    (script resolves the overload itself), and the input/output pytree wrapping and the
    metadata assertions go (script has no pytree; the assertions only re-check dtypes).
    """
    module = program.module()
    graph = module.graph
    for node in list(graph.nodes):
        if node.op == "call_module" and not node.users:  # the input-shape guards
            graph.erase_node(node)
        elif node.op != "call_function":
            continue
        elif node.target is torch.ops.aten._assert_tensor_metadata.default:
            graph.erase_node(node)
        elif node.target is torch.ops.aten.sym_size.int:
            with graph.inserting_before(node):
                size = graph.call_method("size", node.args)
            node.replace_all_uses_with(size)
            graph.erase_node(node)
        elif isinstance(node.target, torch._ops.OpOverload):
            node.target = node.target.overloadpacket
    output = next(node for node in graph.nodes if node.op == "output")
    (result,) = output.args[0]  # one output: the descriptors
    output.args = (result,)
    graph._codegen = fx.graph.CodeGen()  # a plain forward(self, images), no pytree
    graph.eliminate_dead_code()
    return fx.GraphModule(module, graph)


def _torchscript_runner(data: bytes) -> Runner:
    """The TorchScript module loaded from bytes, on the CPU."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.load(io.BytesIO(data), map_location="cpu")

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return scripted(torch.from_numpy(images)).numpy()

    return run


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(("onnx", "onnxscript", "onnxruntime"), ".onnx", _onnx_bytes, _onnx_runner),
    "torchscript": ExportFormat((), ".torchscript.pt", _torchscript_bytes, _torchscript_runner),
}


def export_format(name: str) -> ExportFormat:
    """The format registered under `name`, its packages checked; ExportError otherwise."""
    if name not in FORMATS:
        raise ExportError(f"unknown export format {name!r}; choose one of {sorted(FORMATS)}")
    fmt = FORMATS[name]
    missing = missing_packages(fmt)
    if missing:
        raise ExportError(
            f"--format {name} needs the package(s) {', '.join(missing)}, not installed here: "
            'pip install -e ".[export]" (or pip install onnx onnxruntime onnxscript)'
        )
    return fmt

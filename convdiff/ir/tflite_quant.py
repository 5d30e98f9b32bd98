"""Quantized weights read straight from a .tflite flatbuffer, for models TVM refuses.

TVM's TFLite frontend refuses dynamic-range quantized files (int8 weights, float activations:
what ``TFLiteConverter`` with ``Optimize.DEFAULT`` writes). The weights are still in the file:
this module reads them with the ``tflite`` flatbuffer package (no TensorFlow), which tensors are
int8, their scales and zero points, which operators consume them, and their dequantized float
values ``(q - zero_point) * scale`` (per channel along ``quantized_dimension``).

:func:`float_twin` writes the same model with each such weight replaced by its dequantized
float32 values, which TVM imports like any float model: the canonical graph then carries
exactly the weights the quantized model computes with, and the int8 values stay as evidence
(:meth:`QuantReport.save`). The writer uses the flatbuffer object API of
``ai_edge_litert.schema_py_generated`` (the ``tflite`` package has no writer); importing it
loads no interpreter and no TensorFlow. The object-API helpers below (:func:`unpack`, :func:`pack`,
:func:`set_float32`, ...) are shared with the repair appliers (:mod:`convdiff.repair`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_INT_TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32}


def dequantize(q: np.ndarray, scales: Any, zero_points: Any, axis: int) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32; several scales run along ``axis`` (TFLite's
    quantized dimension, ONNX's axis): one rule for both formats' integer tensors."""
    scale = np.asarray(scales, dtype=np.float64).reshape(-1)
    zero = np.asarray(zero_points, dtype=np.float64).reshape(-1)
    if scale.size > 1 and q.ndim:
        shape = [1] * q.ndim
        shape[axis] = scale.size
        scale = scale.reshape(shape)
        zero = zero.reshape(shape) if zero.size > 1 else zero
    return ((q.astype(np.float64) - zero) * scale).astype(np.float32)


@dataclass
class QuantTensor:
    """One constant tensor stored quantized in the file."""

    index: int
    name: str
    dtype: str  # TFLite tensor type name: INT8, UINT8, ...
    shape: list[int]
    scales: list[float]
    zero_points: list[int]
    quantized_dimension: int
    consumers: list[str] = field(default_factory=list)  # "CONV_2D#0": op name, op index
    values: np.ndarray | None = field(default=None, repr=False)  # the stored integers

    def dequantized(self) -> np.ndarray:
        """``(q - zero_point) * scale`` in float32, per channel when there are several scales."""
        assert self.values is not None
        return dequantize(self.values, self.scales, self.zero_points, self.quantized_dimension)

    def step(self) -> np.ndarray:
        """One quantization step per element (the scale broadcast over the tensor)."""
        assert self.values is not None
        scale = np.asarray(self.scales, dtype=np.float32)
        if scale.size > 1:
            shape = [1] * self.values.ndim
            shape[self.quantized_dimension] = scale.size
            scale = scale.reshape(shape)
        return np.broadcast_to(scale, self.values.shape)


@dataclass
class QuantReport:
    """Every quantized constant of a .tflite file (first subgraph)."""

    path: str
    tensors: list[QuantTensor]

    @property
    def quantized(self) -> list[QuantTensor]:
        """Weights stored as integers with a scale (int32 biases of full-int models excluded)."""
        return [t for t in self.tensors if t.dtype in ("INT8", "UINT8", "INT16")]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "tensors": [
                {k: v for k, v in t.__dict__.items() if k != "values"} for t in self.tensors
            ],
        }

    def save(self, npz_path: Path) -> Path:
        """Integers, scales, zero points and dequantized values, keyed ``<tensor name>/...``."""
        arrays: dict[str, np.ndarray] = {}
        for t in self.tensors:
            assert t.values is not None
            arrays[f"{t.name}/q"] = t.values
            arrays[f"{t.name}/scale"] = np.asarray(t.scales, dtype=np.float32)
            arrays[f"{t.name}/zero_point"] = np.asarray(t.zero_points, dtype=np.int64)
            arrays[f"{t.name}/float"] = t.dequantized()
        np.savez(npz_path, **arrays)
        return Path(npz_path)


def read(path: str | Path) -> QuantReport:
    """List the quantized constant tensors of a .tflite file, with values and consumers."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    type_names = {v: k for k, v in TensorType.__dict__.items() if not k.startswith("_")}
    op_names = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}
    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    consumers: dict[int, list[str]] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        op_name = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        for t in op.InputsAsNumpy():
            consumers.setdefault(int(t), []).append(f"{op_name}#{i}")
    tensors = []
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        dtype = type_names.get(tensor.Type(), "?")
        quant = tensor.Quantization()
        data = model.Buffers(tensor.Buffer()).DataAsNumpy() if tensor.Buffer() else 0
        if dtype not in _INT_TYPES or quant is None or quant.ScaleLength() == 0:
            continue
        if isinstance(data, int) or len(data) == 0:  # an activation, not a constant
            continue
        shape = [int(d) for d in tensor.ShapeAsNumpy()]
        values = np.frombuffer(data.tobytes(), dtype=_INT_TYPES[dtype]).reshape(shape)
        tensors.append(
            QuantTensor(
                index=i,
                name=tensor.Name().decode(),
                dtype=dtype,
                shape=shape,
                scales=[float(s) for s in quant.ScaleAsNumpy()],
                zero_points=[int(z) for z in quant.ZeroPointAsNumpy()],
                quantized_dimension=int(quant.QuantizedDimension()),
                consumers=consumers.get(i, []),
                values=values.copy(),
            )
        )
    return QuantReport(str(path), tensors)


def float_twin(path: str | Path, out_path: str | Path) -> Path:
    """Write ``path`` with every quantized weight that a float op consumes directly (dynamic
    range) replaced by its dequantized float32 values and its quantization removed."""
    report = read(path)
    model = unpack(path)
    fed_to_dequantize = {int(t) for op in ops_of(model, "DEQUANTIZE") for t in op.inputs}
    for qt in report.quantized:
        if qt.index in fed_to_dequantize:  # already dequantized by an explicit op
            continue
        set_float32(model, qt.index, qt.dequantized())
    out = Path(out_path)
    out.write_bytes(pack(model))
    return out


# -- flatbuffer object-API helpers, shared with convdiff.repair.appliers.tflite -------------------


def unpack(path: str | Path) -> Any:
    """The whole model as mutable ``ai_edge_litert.schema_py_generated.ModelT`` objects."""
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)


def pack(model: Any) -> bytes:
    """Serialize a ``ModelT`` as a .tflite file (identifier ``TFL3``); deterministic."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def op_kind(model: Any, op: Any) -> str:
    """The builtin operator name of ``op`` (``CONV_2D``, ``DEQUANTIZE``, ...)."""
    from ai_edge_litert import schema_py_generated as schema

    code = model.operatorCodes[op.opcodeIndex]
    number = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(number, "?")


def ops_of(model: Any, kind: str, subgraph: int = 0) -> list[Any]:
    """The operators of one builtin kind, in file order."""
    return [op for op in model.subgraphs[subgraph].operators if op_kind(model, op) == kind]


def set_float32(model: Any, index: int, values: np.ndarray, subgraph: int = 0) -> None:
    """Store ``values`` as tensor ``index``'s float32 constant data: type FLOAT32, shape of
    ``values``, no quantization. A buffer that other tensors also use is not edited in place:
    the tensor gets a new buffer (else the other tensors would change too)."""
    from ai_edge_litert import schema_py_generated as schema

    graph = model.subgraphs[subgraph]
    tensor = graph.tensors[index]
    users = sum(
        t.buffer == tensor.buffer for g in model.subgraphs for t in g.tensors if t is not tensor
    )
    if tensor.buffer == 0 or users:
        model.buffers.append(schema.BufferT())
        tensor.buffer = len(model.buffers) - 1
    data = np.ascontiguousarray(values, dtype=np.float32)
    buffer = model.buffers[tensor.buffer]
    buffer.data = np.frombuffer(data.tobytes(), dtype=np.uint8)
    buffer.offset = buffer.size = 0
    tensor.type = schema.TensorType.FLOAT32
    tensor.quantization = None
    if list(tensor.shape if tensor.shape is not None else []) != list(data.shape):
        tensor.shape = np.asarray(data.shape, dtype=np.int32)
        tensor.shapeSignature = None

"""Quantized tensors read straight from a .tflite flatbuffer, and the file's float twin.

Two kinds of quantized TFLite files, both written by ``TFLiteConverter`` with
``Optimize.DEFAULT``:

- dynamic range (no representative dataset): int8 weights, float activations. TVM's TFLite
  frontend refuses them (``OpNotImplemented``).
- full integer (``--tflite-opt int8``: a representative dataset, int8 builtins): int8 weights
  per output channel, int32 biases whose scale is the input's scale times the weight's, int8
  activations with calibrated scales and zero points, and QUANTIZE / DEQUANTIZE ops where
  float meets integer (the float inputs and outputs of ``--tflite-io float``; a QUANTIZE from
  int8 to int8 also rescales a tensor where two scales meet). TVM imports these, but as
  ``quantize``/``dequantize`` calls around every op with the weights behind ``dequantize``: no
  layer would hold a weight, and the float source has none of those calls.

This module reads them with the ``tflite`` flatbuffer package (no TensorFlow): which tensors are
integers, their scales and zero points, which operators consume them, their dequantized float
values ``(q - zero_point) * scale`` (per channel along ``quantized_dimension``), and per op
the quantization of its activations (:func:`quantized_ops`).

:func:`float_twin` writes the same model in float: each quantized constant replaced by its
dequantized float32 values and, in a full-integer file, every activation float32 and the
QUANTIZE / DEQUANTIZE ops between them removed. TVM imports it like any float model: the
canonical graph then carries exactly the weights the quantized model computes with, and the
integers stay as evidence (:meth:`QuantReport.save`); what the activations' rounding costs is
what the twin leaves out, and what :func:`quantized_ops` reports per layer.

The writer uses the flatbuffer object API of ``ai_edge_litert.schema_py_generated`` (the
``tflite`` package has no writer); importing it loads no interpreter and no TensorFlow. The
object-API helpers below (:func:`unpack`, :func:`pack`, :func:`set_float32`, ...) are shared
with the repair appliers (:mod:`convdiff.repair`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_INT_TYPES = {"INT8": np.int8, "UINT8": np.uint8, "INT16": np.int16, "INT32": np.int32}
ACTIVATION_TYPES = ("INT8", "UINT8", "INT16")  # integer activations of a full-integer model
CONVERSION_OPS = ("QUANTIZE", "DEQUANTIZE")
# ops that move or pick values without computing new ones: an integer tensor passes through them
# on its own scale and zero point (TFLite's int8 kernels of these ops require equal scales in
# and out; PAD pads with the zero point, which is 0.0), so they lose no precision
VALUE_PRESERVING = (
    "RESHAPE",
    "SQUEEZE",
    "EXPAND_DIMS",
    "TRANSPOSE",
    "PAD",
    "PADV2",
    "MAX_POOL_2D",
    "SLICE",
    "STRIDED_SLICE",
    "GATHER",
    "SPLIT",
    "SPLIT_V",
    "PACK",
    "UNPACK",
    "SPACE_TO_DEPTH",
    "DEPTH_TO_SPACE",
)


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


@dataclass(frozen=True)
class ActivationQuant:
    """The quantization of one activation tensor (a full-integer model's)."""

    dtype: str  # INT8, UINT8, INT16
    scale: float
    zero_point: int


@dataclass
class QuantOp:
    """One op of a .tflite file that computes on quantized values: its quantized weight and
    bias (dynamic range: the weight only), and its activations' quantization (full integer)."""

    index: int  # its position in the file's operator list
    kind: str  # CONV_2D, ADD, ...
    name: str  # its first output tensor's name: how findings and the fallback name the layer
    weight: QuantTensor | None = None
    bias: QuantTensor | None = None
    inputs: list[ActivationQuant] = field(default_factory=list)  # its integer activation inputs
    output: ActivationQuant | None = None  # None: a float output (dynamic range)

    def details(self) -> dict[str, Any]:
        """What a precision finding says about the op, beyond its weight: the file's op, the
        activations' type, scales and zero points, and the int32 bias (JSON values)."""
        found: dict[str, Any] = {"op": self.kind}
        if self.output is not None:
            found["activations"] = self.output.dtype.lower()
            if self.inputs:
                found["input_scale"] = self.inputs[0].scale
                found["input_zero_point"] = self.inputs[0].zero_point
            found["output_scale"] = self.output.scale
            found["output_zero_point"] = self.output.zero_point
        if self.bias is not None:
            found["bias_tensor"] = self.bias.name
            found["bias_dtype"] = self.bias.dtype
            found["bias_scale_min"] = min(self.bias.scales)
            found["bias_scale_max"] = max(self.bias.scales)
        return found


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


def quantized_ops(path: str | Path) -> list[QuantOp]:
    """The ops of the file's first subgraph that compute on quantized values, in file order:
    those with an integer activation output (full integer) or a quantized weight (dynamic
    range), except QUANTIZE / DEQUANTIZE and the ops that only move values
    (:data:`VALUE_PRESERVING`)."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    type_names = {v: k for k, v in TensorType.__dict__.items() if not k.startswith("_")}
    op_names = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}
    constants = {t.index: t for t in read(path).tensors}
    model = tflite.Model.GetRootAsModel(Path(path).read_bytes(), 0)
    graph = model.Subgraphs(0)

    def activation(index: int) -> ActivationQuant | None:
        if index < 0 or index in constants:
            return None
        tensor = graph.Tensors(index)
        quant = tensor.Quantization()
        dtype = type_names.get(tensor.Type(), "?")
        if dtype not in ACTIVATION_TYPES or quant is None or quant.ScaleLength() == 0:
            return None
        return ActivationQuant(dtype, float(quant.Scale(0)), int(quant.ZeroPoint(0)))

    found = []
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        if kind in CONVERSION_OPS or kind in VALUE_PRESERVING:
            continue
        inputs = [int(t) for t in op.InputsAsNumpy()]
        held = [constants[t] for t in inputs if t in constants]
        weight = next((t for t in held if t.dtype in ACTIVATION_TYPES), None)
        bias = next((t for t in held if t.dtype == "INT32"), None)
        output = activation(int(op.Outputs(0)))
        if weight is None and output is None:
            continue
        found.append(
            QuantOp(
                index=i,
                kind=kind,
                name=graph.Tensors(int(op.Outputs(0))).Name().decode(),
                weight=weight,
                bias=bias,
                inputs=[a for t in inputs if (a := activation(t)) is not None],
                output=output,
            )
        )
    return found


def is_full_integer(path: str | Path) -> bool:
    """Whether the file's activations are quantized (full integer), not only its weights."""
    return any(op.output is not None for op in quantized_ops(path))


def float_twin(path: str | Path, out_path: str | Path) -> Path:
    """Write ``path`` in float: every quantized constant that an op computes with directly
    replaced by its dequantized float32 values (dynamic range: the int8 weights; full integer:
    the int8 weights and the int32 biases too) and its quantization removed; in a full-integer
    file also every integer activation made float32 (its scale and zero point dropped: the
    values it stands for are ``(q - zero_point) * scale``) and the QUANTIZE / DEQUANTIZE ops
    between activations removed, their consumers fed what they were fed. Integer inputs and
    outputs (``--tflite-io int8``) become float32 too: the twin takes the source's images."""
    report = read(path)
    model = unpack(path)
    full = is_full_integer(path)
    fed_to_dequantize = {int(t) for op in ops_of(model, "DEQUANTIZE") for t in op.inputs}
    for qt in report.tensors if full else report.quantized:
        if qt.index in fed_to_dequantize:  # already dequantized by an explicit op
            continue
        set_float32(model, qt.index, qt.dequantized())
    if full:
        _float_activations(model, {t.index for t in report.tensors})
    out = Path(out_path)
    out.write_bytes(pack(model))
    return out


def _float_activations(model: Any, constants: set[int]) -> None:
    """Make the first subgraph's integer activations float32 and drop the QUANTIZE /
    DEQUANTIZE ops between activations (a DEQUANTIZE of a constant, a float16 weight, stays)."""
    from ai_edge_litert import schema_py_generated as schema

    graph = model.subgraphs[0]
    integer = {getattr(schema.TensorType, name) for name in ACTIVATION_TYPES}
    for i, tensor in enumerate(graph.tensors):
        if i not in constants and tensor.type in integer and tensor.quantization is not None:
            tensor.type = schema.TensorType.FLOAT32
            tensor.quantization = None
    kept, renamed = [], {}
    for op in graph.operators:
        source = int(op.inputs[0]) if len(op.inputs) else -1
        source = renamed.get(source, source)
        if op_kind(model, op) in CONVERSION_OPS and source not in constants:
            renamed[int(op.outputs[0])] = source
            continue
        kept.append(op)
    for op in kept:
        op.inputs = np.asarray([renamed.get(int(t), int(t)) for t in op.inputs], dtype=np.int32)
    graph.operators = kept
    graph.outputs = np.asarray([renamed.get(int(t), int(t)) for t in graph.outputs], np.int32)


# -- flatbuffer object-API helpers, shared with convdiff.repair.appliers.tflite -------------------


def unpack(path: str | Path) -> Any:
    """The whole model as mutable ``ai_edge_litert.schema_py_generated.ModelT`` objects."""
    return unpack_bytes(Path(path).read_bytes())


def unpack_bytes(buf: bytes) -> Any:
    """:func:`unpack` of a model held in memory."""
    from ai_edge_litert import schema_py_generated as schema

    return schema.ModelT.InitFromPackedBuf(buf, 0)


def type_name(tensor_type: int) -> str:
    """A TFLite tensor type's name (``FLOAT32``, ``INT8``, ...)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    return names.get(tensor_type, "?")


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

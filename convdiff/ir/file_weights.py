"""Weight tensors read straight from model files, for the weights stage when TVM refuses one.

The weights stage needs no graph, only the tensors paired across the two models: a converter
carries every weight over, in another layout or precision at most (:mod:`convdiff.ir.anchors`).
So when TVM cannot import a model, the parameters of both files still tell whether the
conversion scaled, zeroed, transposed or quantized one. This module turns a file's tensors, in
file order, into a :class:`CanonicalGraph` of one layer per tensor (``conv2d`` for 4-D,
``dense`` for 2-D, else ``other``; ``params={"weight": ...}``; the layer id is the file's
tensor name; each layer fed by the one before, so the graph is valid), and brings each tensor
to the canonical layout where the file says which it is:

- ONNX (read here with the ``onnx`` package): Conv weights are OIHW already; a MatMul's
  constant right operand and a Gemm's ``B`` without ``transB`` are ``[in, out]`` and are
  transposed to ``[out, in]``;
- TFLite (the ``tflite`` flatbuffer package, no interpreter): CONV_2D filters ``OHWI`` become
  ``OIHW``, DEPTHWISE_CONV_2D ``[1, H, W, C]`` becomes ``[C, 1, H, W]``; int8 weights are
  dequantized with their scales (:func:`convdiff.ir.tflite_quant.read`);
- Keras (tensors read in a ``tf`` worker): kernels ``HWIO`` become ``OIHW``, depthwise kernels
  ``[H, W, C, m]`` become ``[C*m, 1, H, W]``, Dense kernels ``[in, out]`` become ``[out, in]``;
- torch: OIHW and ``[out, in]`` already.

What a file does not say (a layout no rule above covers) :func:`match_layouts` settles by
content after the anchors are paired: B's tensor is transposed by the axis permutation under
which its rows point as A's do. Integer tensors (shapes, pads, indices, BatchNorm's step count)
are no weights and are left out.

Pure numpy plus the two flatbuffer/protobuf readers: no framework, no TVM.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from convdiff.ir.anchors import MATCH_COS, Anchor
from convdiff.ir.graph import CanonicalGraph, Layer

INPUT_ID = "(file)"  # the graph's one input layer; no tensor of a model file is named so

Tensors = list[tuple[str, np.ndarray]]


def graph_of(tensors: Tensors, framework: str, path: str | Path) -> CanonicalGraph:
    """One layer per tensor, in file order, chained so that the graph is valid."""
    layers = [Layer(INPUT_ID, "input")]
    seen: set[str] = set()
    for i, (raw_name, array) in enumerate(tensors):
        # a damaged file may hold a name that is no UTF-8 (protobuf hands it over as bytes)
        tensor_name = (
            raw_name.decode("utf-8", "replace") if isinstance(raw_name, bytes) else str(raw_name)
        )
        name = tensor_name if tensor_name not in seen else f"{tensor_name}#{i}"  # names repeat
        seen.add(name)
        op = {4: "conv2d", 2: "dense"}.get(array.ndim, "other")
        layers.append(
            Layer(
                name,
                op,
                inputs=[layers[-1].id],
                shape=list(array.shape),
                params={"weight": array},
                source=f"{framework} file tensor",
            )
        )
    meta = {"framework": framework, "path": str(path), "route": "file tensors"}
    return CanonicalGraph(layers, [INPUT_ID], [layers[-1].id], meta)


def is_weight(array: np.ndarray) -> bool:
    """Floating-point tensors with values: integers are shapes, pads, indices or counters."""
    return np.issubdtype(array.dtype, np.floating) and array.size > 0


def onnx_tensors(path: str | Path) -> Tensors:
    """The float initializers (and Constant nodes' float values) of an ONNX file, in file
    order, in canonical layouts (see the module docstring)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    found: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init) for init in model.graph.initializer
    }
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found.setdefault(node.output[0], numpy_helper.to_array(node.attribute[0].t))
    transposed = set()
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) > 1:
            transposed.add(node.input[1])
        elif node.op_type == "Gemm" and len(node.input) > 1:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            if not trans_b:
                transposed.add(node.input[1])
    out = []
    for name, array in found.items():
        if not is_weight(array):
            continue
        value = np.asarray(array, dtype=np.float32)
        if name in transposed and value.ndim == 2:
            value = np.ascontiguousarray(value.T)
        out.append((name, value))
    return out


def tflite_tensors(path: str | Path) -> Tensors:
    """The constant float tensors of a .tflite file (first subgraph), int8/int16 weights
    dequantized, in tensor order, filters in canonical layouts."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    from convdiff.ir import tflite_quant

    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    graph = model.Subgraphs(0)
    op_names = {v: k for k, v in BuiltinOperator.__dict__.items() if not k.startswith("_")}
    consumer: dict[int, str] = {}
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        for t in op.InputsAsNumpy():
            consumer.setdefault(int(t), kind)
    # a DEQUANTIZE op's output is the float weight a conv reads: its input takes its consumer
    for i in range(graph.OperatorsLength()):
        op = graph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        if op_names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode())) == "DEQUANTIZE":
            out = int(op.OutputsAsNumpy()[0])
            if out in consumer:
                consumer[int(op.InputsAsNumpy()[0])] = consumer[out]
    quantized = {t.index: t for t in tflite_quant.read(path).quantized}
    floats = {TensorType.FLOAT32: np.float32, TensorType.FLOAT16: np.float16}
    out: Tensors = []
    for i in range(graph.TensorsLength()):
        tensor = graph.Tensors(i)
        if i in quantized:
            value = quantized[i].dequantized()
        elif tensor.Type() in floats and tensor.Buffer():
            data = model.Buffers(tensor.Buffer()).DataAsNumpy()
            if isinstance(data, int) or len(data) == 0:  # an activation, not a constant
                continue
            shape = [int(d) for d in tensor.ShapeAsNumpy()]
            value = np.frombuffer(data.tobytes(), dtype=floats[tensor.Type()]).reshape(shape)
        else:
            continue
        value = np.asarray(value, dtype=np.float32)
        kind = consumer.get(i, "")
        if value.ndim == 4 and kind == "CONV_2D":
            value = value.transpose(0, 3, 1, 2)  # OHWI -> OIHW
        elif value.ndim == 4 and kind == "DEPTHWISE_CONV_2D":
            value = value.transpose(3, 0, 1, 2)  # [1, H, W, C*m] -> [C*m, 1, H, W]
        out.append((tensor.Name().decode(), np.ascontiguousarray(value)))
    return out


def keras_layouts(tensors: Tensors) -> Tensors:
    """Keras variables (named by their paths, ``conv/kernel``) in canonical layouts."""
    out = []
    for name, value in tensors:
        leaf = name.rsplit("/", 1)[-1]
        if value.ndim == 4 and leaf == "depthwise_kernel":  # [H, W, C, m] -> [C*m, 1, H, W]
            h, w, c, m = value.shape
            value = value.transpose(2, 3, 0, 1).reshape(c * m, 1, h, w)
        elif value.ndim == 4 and leaf == "kernel":  # HWIO -> OIHW
            value = value.transpose(3, 2, 0, 1)
        elif value.ndim == 2 and leaf == "kernel":  # Dense [in, out] -> [out, in]
            value = value.T
        out.append((name, np.ascontiguousarray(value)))
    return out


def match_layouts(a: CanonicalGraph, b: CanonicalGraph, anchors: list[Anchor]) -> list[str]:
    """Transpose each anchor's B weight that holds A's values in another shape to A's layout
    (the permutation, of at most 4 axes, under which B's rows point as A's do); the B layer
    ids so moved, as ``"<id> axes [..]"``."""
    moved = []
    for anchor in anchors:
        wa, wb = a[anchor.a].params.get("weight"), b[anchor.b].params.get("weight")
        if wa is None or wb is None or wa.shape == wb.shape or wa.size != wb.size:
            continue
        perm = _best_permutation(np.asarray(wa, np.float64), np.asarray(wb, np.float64))
        if perm is not None:
            b[anchor.b].params["weight"] = np.ascontiguousarray(wb.transpose(perm))
            moved.append(f"{anchor.b} axes {list(perm)}")
    return moved


def _best_permutation(a: np.ndarray, b: np.ndarray) -> tuple[int, ...] | None:
    """The permutation of ``b``'s axes that gives ``a``'s shape with the rows most alike
    (mean ``|cos|`` at least :data:`MATCH_COS`: a scaled or rounded tensor still matches)."""
    if b.ndim > 4:
        return None
    best, best_cos = None, MATCH_COS - 1e-12
    for perm in itertools.permutations(range(b.ndim)):
        moved = b.transpose(perm)
        if moved.shape != a.shape:
            continue
        cos = _row_cos(a, moved)
        if cos > best_cos:  # the first of equals: a square layout keeps its order
            best, best_cos = perm, cos
    return best


def _row_cos(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    norms = np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1)
    dots = np.abs(np.sum(ra * rb, axis=1))
    cos = np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)
    return float(cos.mean())

"""Child side: import a model into Apache TVM Relax and read its canonical layer graph.

Runs only in a worker of kind ``tvm`` (TVM 0.27; Relay no longer exists). That worker imports
TVM, onnx, onnxslim, the ``tflite`` flatbuffer package and, for ``.pt2`` files, torch -- never
TensorFlow or Keras (see :mod:`convdiff.ir` for why torch may share the process and TF may not).

Frontends (keep_params_in_input=False / keep_params_as_input=False everywhere, so the weights
are Relax constants visible in the IR):

- onnx: ``relax.frontend.onnx.from_onnx``. Legacy torch exports compute their pads at run time
  and are refused ("Dynamic pads are not supported yet"); such a model is simplified with
  onnxslim and imported again, and the graph's ``meta["notes"]`` says so.
- tflite: ``relax.frontend.tflite.from_tflite``. It refuses dynamic-range quantized files
  (``OpNotImplemented``: "...likely to have dynamic range quantization: 'CONV_2D'..."): the
  refusal is recorded, and the model is imported from its *float twin*
  (:func:`convdiff.ir.tflite_quant.float_twin`: the file with each int8 weight replaced by its
  dequantized float32 values); the int8 values and scales are kept in ``quant.npz`` as
  evidence. TVM 0.27's RESHAPE converter also refuses a shape tensor computed at run time
  (SHAPE -> STRIDED_SLICE -> PACK, which onnx2keras' Flatten becomes); :class:`_TFLiteConverter`
  then uses the output tensor's shape recorded in the flatbuffer (the inputs are imported with
  their static shapes, so a -1 batch in its shape signature is 1 here).
- torch: ``torch.export.load`` + ``relax.frontend.torch.from_exported_program`` (eval-mode
  BatchNorm stays one ``batch_norm`` op). onnx2torch turns a constant ONNX Gather index into
  ``aten.item`` of a buffer, and TVM 0.27's ``select`` takes only a Python int
  ("value has to be scalar or Tensor", torchvision InceptionV3's ``transform_input``):
  :func:`_fold_constant_items` puts the buffer's value in its place first.

Reading the graph (:func:`extract`): every binding of ``main`` becomes a :class:`Layer` in
*logical NCHW* terms. Each tensor carries the permutation from its physical axes to logical
ones, so a ``permute_dims`` that only changes layout becomes an ``identity`` (noise), while a
layout-sensitive op (conv, pool) fed a tensor in the wrong layout gets an explicit logical
``transpose`` layer -- a real change of meaning. Constant sub-expressions (weight transposes,
bias reshapes, Clip's isnan/where) are folded with numpy, so params appear in one layout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.ir.graph import CanonicalGraph, Layer

TVM_FRAMEWORKS = ("onnx", "tflite", "torch")

NCHW = (0, 1, 2, 3)
NHWC = (0, 2, 3, 1)  # physical axis i holds logical axis NHWC[i]


# -- loading -------------------------------------------------------------------------------


@dataclass
class Imported:
    """A Relax module and how it was obtained."""

    mod: Any
    notes: list[str]
    refused: str | None = None  # the frontend's refusal of the file itself, if any
    quant_npz: str | None = None


def load_module(framework: str, path: str, work_dir: Path | None = None) -> Imported:
    """Import ``path`` with TVM's frontend for ``framework`` (see the module docstring)."""
    if framework == "onnx":
        return _load_onnx(path)
    if framework == "tflite":
        return _load_tflite(path, work_dir or Path(path).parent)
    if framework == "torch":
        return _load_torch(path)
    raise ValueError(
        f"TVM has no frontend for {framework!r}; expected one of {TVM_FRAMEWORKS} "
        "(Keras/TF go through a converter first: convdiff.ir.import_via_pool)"
    )


def _load_onnx(path: str) -> Imported:
    """ONNX through TVM's frontend, with two ops imported as the other frontends do.

    TVM 0.27's ONNX Pad converter emits ``call_tir(pad)`` (a TE kernel whose widths live only in
    TIR), batch static or not, so canonicalization could not fold tf2onnx's Pad into the next
    Conv as it folds TFLite's PAD (a relax.nn.pad): MobileNetV2's four stride-2 depthwise convs
    then looked unpadded. :func:`_onnx_importer` emits the Relax op instead.

    A Gather of constant non-negative indices becomes a plain ``take``: TVM wraps every index
    in run-time arithmetic on the input's shape (``where(i < 0, i + shape_of(x)[axis], i)``),
    which the .pt2 import of the same model has not (torchvision InceptionV3's
    transform_input: 3 takes became 7 ``other`` layers each and nothing aligned)."""
    import onnx

    model = onnx.load(path)
    try:
        return Imported(_from_onnx(model), [])
    except Exception as exc:  # the frontend's refusal; onnxslim often removes its cause
        import onnxslim

        first = f"{type(exc).__name__}: {_one_line(exc)}"
        mod = _from_onnx(onnxslim.slim(model))
        return Imported(mod, [f"onnx frontend refused the file ({first}); imported after onnxslim"])


def _from_onnx(model: Any) -> Any:
    """``relax.frontend.onnx.from_onnx(model, keep_params_in_input=False)`` with
    :func:`_onnx_importer` (the same opset detection; TVM's checker warnings skipped)."""
    opset = next((o.version for o in model.opset_import if str(o.domain) in ("ai.onnx", "")), 1)
    return _onnx_importer()(None, "float32", keep_params_in_input=False).from_onnx(
        model.graph, opset
    )


def _onnx_importer() -> type:
    """TVM's ONNXGraphImporter with a constant-mode Pad of constant widths as relax.nn.pad and a
    Gather at constant non-negative indices as relax.take (see :func:`_load_onnx`)."""
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend as frontend

    class _Importer(frontend.ONNXGraphImporter):
        def _convert_operator(self, op_name: str, inputs: list, attrs: dict, opset: int) -> Any:
            mode = attrs.get("mode", b"constant")
            if op_name == "Pad" and mode in (b"constant", "constant"):
                try:
                    if opset < 11:
                        pads, value = list(attrs["pads"]), float(attrs.get("value", 0.0))
                        before, after = pads[: len(pads) // 2], pads[len(pads) // 2 :]
                    else:
                        params = [self._nodes, self._params]
                        before, after, value = frontend.Pad._parse_pads_and_axes(inputs, params)
                except (ValueError, KeyError):  # dynamic pads: TVM's converter says so
                    return super()._convert_operator(op_name, inputs, attrs, opset)
                width = [int(w) for pair in zip(before, after, strict=True) for w in pair]
                pad = relax.op.nn.pad(inputs[0], width, "constant", float(value))
                return self.bb.normalize(pad)
            if op_name == "Gather" and _constant_indices(inputs):
                axis = int(attrs.get("axis", 0))
                return self.bb.normalize(relax.op.take(inputs[0], inputs[1], axis))
            return super()._convert_operator(op_name, inputs, attrs, opset)

    return _Importer


def _constant_indices(inputs: list) -> bool:
    """Gather of a tensor at constant indices that need no wrapping (all >= 0)."""
    import tvm
    from tvm import relax

    data, indices = inputs[0], inputs[1]
    if isinstance(data, (relax.ShapeExpr, tvm.ir.GenericConst)):
        return False  # TVM's converter folds these itself
    if not isinstance(indices, tvm.ir.GenericConst):
        return False
    return bool(np.all(indices.value.numpy() >= 0))


def _load_tflite(path: str, work_dir: Path) -> Imported:
    import tflite
    from tvm.relax.frontend.tflite import from_tflite

    from convdiff.ir import tflite_quant

    def convert(buf: bytes) -> Any:
        model = tflite.Model.GetRootAsModel(buf, 0)
        return from_tflite(model, shape_dict=_tflite_input_shapes(model), op_converter=_converter())

    buf = Path(path).read_bytes()
    notes: list[str] = []
    try:
        return Imported(convert(buf), notes)
    except Exception as exc:
        refused = f"{type(exc).__name__}: {_one_line(exc)}"
        report = tflite_quant.read(path)
        if not report.quantized:
            raise
    work_dir.mkdir(parents=True, exist_ok=True)
    twin = tflite_quant.float_twin(path, work_dir / "float_twin.tflite")
    quant_npz = report.save(work_dir / "quant.npz")
    notes.append(
        "TVM's TFLite frontend refused the file; imported its float twin (int8 weights "
        f"dequantized from the flatbuffer: {', '.join(t.name for t in report.quantized)})"
    )
    return Imported(convert(Path(twin).read_bytes()), notes, refused, str(quant_npz))


def _tflite_input_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    graph = model.Subgraphs(0)
    shapes = {}
    for i in graph.InputsAsNumpy():
        tensor = graph.Tensors(int(i))
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy())
        if all(d > 0 for d in shape):
            shapes[tensor.Name().decode()] = shape
    return shapes


def _converter() -> type:
    """TVM's TFLite OperatorConverter, with RESHAPE falling back to the static output shape."""
    from tvm import relax
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    class _TFLiteConverter(OperatorConverter):
        def convert_reshape(self, op: Any) -> Any:
            try:
                return super().convert_reshape(op)
            except Exception:  # tvm_ffi's TypeError: the shape is an ir.Call, not constants
                output = self.get_output_tensors(op)[0].tensor
                shape = [int(d) for d in output.ShapeAsNumpy()]
                if not shape or any(d < 0 for d in shape):
                    raise
                data = self.get_expr(self.get_input_tensors(op)[0].tensor_idx)
                return relax.op.reshape(data, shape=relax.ShapeExpr(shape))

    return _TFLiteConverter


def _load_torch(path: str) -> Imported:
    import torch
    from tvm.relax.frontend.torch import from_exported_program

    if not path.endswith(".pt2"):
        raise ValueError("TVM imports torch models as torch.export programs (.pt2) only")
    program = torch.export.load(path)
    notes = []
    folded = _fold_constant_items(program)
    if folded:
        notes.append(f"{folded} aten.item of a constant buffer folded to its value for TVM")
    return Imported(from_exported_program(program, keep_params_as_input=False), notes)


def _fold_constant_items(program: Any) -> int:
    """Replace each ``aten.item`` whose input is a buffer or lifted constant (through dtype
    casts only) by its Python number in the arguments of the nodes that read it; the count.
    The graph computes the same thing: the buffer is a constant of the program."""
    import torch

    signature = program.graph_signature
    constants = {**signature.inputs_to_buffers, **signature.inputs_to_lifted_tensor_constants}
    values = {**program.state_dict, **program.constants}
    folded = 0
    for node in list(program.graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.item.default:
            continue
        source, casts = node.args[0], []
        while source.op == "call_function" and source.target == torch.ops.aten.to.dtype:
            casts.append(source.args[1])
            source = source.args[0]
        value = values.get(constants.get(source.name, "")) if source.op == "placeholder" else None
        if value is None or value.numel() != 1:
            continue
        for dtype in reversed(casts):  # innermost cast first, as the graph does
            value = value.to(dtype)
        number = value.item()
        for user in list(node.users):
            user.args = tuple(number if arg is node else arg for arg in user.args)
        folded += 1
    program.graph.eliminate_dead_code()
    return folded


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " | ".join(lines)[:600]


# -- entry points (worker tasks) -------------------------------------------------------------


def import_graph(framework: str, path: str, out_dir: str) -> dict[str, Any]:
    """Import a model into TVM Relax and write its (not yet canonicalized) layer graph.

    Returns ``{"graph", "params", "ops", "refused", "notes", "quant", "import_seconds"}``;
    ``refused`` is the frontend's exact refusal of the file itself (then the graph comes from a
    legitimate substitute, described in ``notes``), or None.
    """
    import tvm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    imported = load_module(framework, path, out)
    seconds = time.perf_counter() - started
    meta = {
        "framework": framework,
        "path": str(path),
        "tvm": tvm.__version__,
        "refused": imported.refused,
        "notes": imported.notes,
    }
    graph = extract(imported.mod, meta)
    (out / "relax.py").write_text(imported.mod.script(show_meta=False))
    json_path, npz_path = graph.save(out / "graph.json")
    return {
        "graph": str(json_path),
        "params": str(npz_path),
        "ops": len(graph.ops()),
        "refused": imported.refused,
        "notes": imported.notes,
        "quant": imported.quant_npz,
        "import_seconds": seconds,
    }


def run_tvm(
    framework: str,
    path: str,
    inputs_npz: str,
    outputs_npz: str,
    layout: str = "auto",
    layers: list[str] | None = None,
    images: list[int] | None = None,
    activations_npz: str | None = None,
    run_images: list[int] | None = None,
) -> dict[str, Any]:
    """Compile the imported module for llvm ONCE and run it on ``x`` (NHWC) of ``inputs_npz``.

    An independent runtime: TVM's own kernels, not the framework's. The batch is fed slice by
    slice when the module's batch dimension is fixed. Saves ``y`` (flattened per sample).

    Activations: with ``layers`` (raw layer ids, as :func:`import_graph` names them) and
    ``activations_npz``, the same compile also returns those intermediate tensors -- ``main``
    is rebuilt to return ``(output, *tensors)`` -- and the npz gets, per layer id, its output
    in *logical* layout (NCHW for 4-D) for the images ``images`` (indices into ``x``; all
    when None), stacked on axis 0. ``run_images`` (ascending indices, a superset of
    ``images``) runs those images only, and ``y`` holds their outputs, in that order; None runs
    them all (TVM untuned takes seconds per image). Layer ids the module does not have are listed in
    the value's ``activations["missing"]``; a mapping that cannot be trusted (ids unlike
    import_graph's) leaves the npz unwritten and says why in ``activations["error"]``.
    """
    import tvm
    from tvm import relax

    started = time.perf_counter()
    imported = load_module(framework, path, Path(outputs_npz).parent / "tvm-import")
    imported_at = time.perf_counter()
    mod, exposed, act_info = imported.mod, [], None
    if layers and activations_npz:
        mod, exposed, act_info = _expose(imported.mod, layers)
    executable = tvm.compile(mod, target="llvm")
    vm = relax.VirtualMachine(executable, tvm.cpu())
    compiled_at = time.perf_counter()
    shape = _input_shape(imported.mod)
    if layout == "auto":
        layout = "NCHW" if len(shape) == 4 and shape[1] in (1, 3) else "NHWC"
    with np.load(inputs_npz) as data:
        x = data["x"].astype(np.float32)
    if layout == "NCHW":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    wanted = list(range(len(x))) if images is None else [int(i) for i in images]
    run = list(range(len(x))) if run_images is None else [int(i) for i in run_images]
    keep = set(wanted)
    step = len(x) if shape and shape[0] < 0 else max(shape[0], 1) if shape else 1
    chunks, acts = [], {lid: [] for lid, _, _ in exposed}
    for i in range(0, len(run), step):
        index = run[i : i + step]
        result = vm["main"](tvm.runtime.tensor(np.ascontiguousarray(x[index])))
        if exposed:  # (model output, *intermediate tensors)
            tensors, result = list(result)[1:], result[0]
            rows = [k for k, j in enumerate(index) if j in keep]
            for (lid, _, perm), value in zip(exposed, tensors, strict=True):
                if rows:
                    acts[lid].append(_logical_array(value, perm)[rows])
        if not hasattr(result, "numpy"):  # a tuple of outputs: the first is the prediction
            result = result[0]
        chunks.append(result.numpy().reshape(len(index), -1))
    finished = time.perf_counter()
    y = np.concatenate(chunks).astype(np.float32)
    np.savez(outputs_npz, y=y)
    if exposed and activations_npz:
        np.savez(activations_npz, **{lid: np.concatenate(v) for lid, v in acts.items() if v})
        act_info = {**(act_info or {}), "npz": activations_npz, "images": wanted}
    return {
        "layout": layout,
        "input_shape": shape,
        "output_shape": list(y.shape),
        "refused": imported.refused,
        "notes": imported.notes,
        "import_seconds": imported_at - started,
        "compile_seconds": compiled_at - imported_at,
        "run_seconds": finished - compiled_at,
        "tvm": tvm.__version__,
        "activations": act_info,
    }


def _expose(mod: Any, layers: list[str]) -> tuple[Any, list[tuple[str, Any, Any]], dict]:
    """``mod`` whose ``main`` also returns the tensors of raw layers ``layers``.

    ToNonDataflow turns DataflowVars into Vars (a dataflow var cannot leave its block); the
    new body returns ``(output, *vars)``. Layer ids come from running the extractor on the
    transformed module, checked equal to the original's: the ids the orchestrator asks for
    are those :func:`import_graph` wrote. Returns the module, ``(id, var, perm)`` per exposed
    layer, and ``{"layers", "missing"}`` (or ``{"error"}`` with the original module).
    """
    from tvm import relax

    plain = relax.transform.ToNonDataflow()(mod)
    original, extractor = _Extractor(mod), _Extractor(plain)
    ids_before = [layer.id for layer in original.run({}).layers]
    ids_after = [layer.id for layer in extractor.run({}).layers]
    if ids_before != ids_after:
        return mod, [], {"error": "layer ids changed under ToNonDataflow; no activations"}
    exposed = [(lid, *extractor.tensors[lid]) for lid in layers if lid in extractor.tensors]
    missing = [lid for lid in layers if lid not in extractor.tensors]
    func = plain["main"]
    fields = [func.body.body] + [var for _, var, _ in exposed]
    body = relax.BlockBuilder().normalize(relax.SeqExpr(func.body.blocks, relax.Tuple(fields)))
    plain["main"] = relax.Function(func.params, body, None, func.is_pure, func.attrs)
    return plain, exposed, {"layers": [lid for lid, _, _ in exposed], "missing": missing}


def _logical_array(value: Any, perm: tuple[int, ...]) -> np.ndarray:
    """A runtime tensor (or BatchNorm's tuple: its field 0) in logical axis order."""
    if not hasattr(value, "numpy"):
        value = value[0]
    array = value.numpy()
    if len(perm) == array.ndim and perm != _ident(array.ndim):
        array = array.transpose(np.argsort(perm))
    return np.asarray(array, dtype=np.float32)


def _input_shape(mod: Any) -> list[int]:
    param = mod["main"].params[0]
    return _shape(param.ty)


# -- reading the Relax module ------------------------------------------------------------------


@dataclass
class _Value:
    """A tensor produced by a layer: its layer id, physical shape and physical->logical axes."""

    layer: str
    shape: list[int]
    perm: tuple[int, ...]


_FOLD_UNARY = {
    "relax.sqrt": np.sqrt,
    "relax.rsqrt": lambda a: 1.0 / np.sqrt(a),
    "relax.negative": np.negative,
    "relax.isnan": np.isnan,
    "relax.exp": np.exp,
}
_FOLD_BINARY = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
    "relax.power": np.power,
}
_BINARY = {
    "relax.add": "add",
    "relax.subtract": "sub",
    "relax.multiply": "mul",
    "relax.divide": "div",
    "relax.maximum": "maximum",
    "relax.minimum": "minimum",
}
_UNARY = {
    "relax.nn.relu": "relu",
    "relax.nn.relu6": "relu6",
    "relax.sigmoid": "sigmoid",
    "relax.tanh": "tanh",
}
_SHAPE_OPS = ("relax.reshape", "relax.squeeze", "relax.expand_dims", "relax.flatten")
_PRIM_BINARY = {"maximum": "maximum", "minimum": "minimum", "add": "add", "multiply": "mul"}


def extract(mod: Any, meta: dict[str, Any] | None = None) -> CanonicalGraph:
    """Read ``mod["main"]`` into a layer graph (logical NCHW, params in one layout)."""
    return _Extractor(mod).run(meta or {})


class _Extractor:
    def __init__(self, mod: Any) -> None:
        self.mod = mod
        self.func = mod["main"]
        self.env: dict[Any, Any] = {}  # relax Var -> np.ndarray | _Value | tuple marker
        self.layers: list[Layer] = []
        self.ids: set[str] = set()
        # layer id -> (the Relax var holding its output, that tensor's physical->logical perm)
        self.tensors: dict[str, tuple[Any, tuple[int, ...]]] = {}

    def run(self, meta: dict[str, Any]) -> CanonicalGraph:
        from tvm import relax

        bindings = [b for block in self.func.body.blocks for b in block.bindings]
        inputs = []
        for param in self.func.params:
            shape = _shape(param.ty)
            perm = self._input_perm(param, bindings) if len(shape) == 4 else _ident(len(shape))
            lid = self._add(
                Layer(_name(param), "input", shape=_logical(shape, perm), source="param")
            )
            self.env[param] = _Value(lid, shape, perm)
            self.tensors[lid] = (param, perm)
            inputs.append(lid)
        for binding in bindings:
            if not isinstance(binding, relax.VarBinding):
                raise ValueError(f"unsupported binding {type(binding).__name__}")
            self.env[binding.var] = self._bind(binding.var, binding.value)
        result = self._resolve(self.func.body.body)
        results = result if isinstance(result, list) else [result]
        outputs = [r.layer for r in results if isinstance(r, _Value)]
        return CanonicalGraph(self.layers, inputs, outputs, dict(meta))

    # -- helpers ----------------------------------------------------------------------------

    def _add(self, layer: Layer) -> str:
        base, n = layer.id, 1
        while layer.id in self.ids:
            n += 1
            layer.id = f"{base}_{n}"
        layer.tensor = layer.id
        self.ids.add(layer.id)
        self.layers.append(layer)
        return layer.id

    def _resolve(self, expr: Any) -> Any:
        from tvm import relax
        from tvm.ir.expr import Constant

        if isinstance(expr, Constant):  # tensors and scalars alike in TVM 0.27
            value = expr.value
            return value.numpy() if hasattr(value, "numpy") else np.asarray(value)
        if isinstance(expr, relax.Var):
            return self.env[expr]
        if isinstance(expr, relax.Tuple):
            return [self._resolve(f) for f in expr.fields]
        if isinstance(expr, relax.ShapeExpr):
            return [_py(v) for v in expr.values]
        raise ValueError(f"unsupported expression {type(expr).__name__}")

    def _input_perm(self, param: Any, bindings: list[Any]) -> tuple[int, ...]:
        """The layout of a 4-D input: follow it to the first layout-sensitive op."""
        from tvm import relax

        current, q = param, list(range(4))
        for binding in bindings:
            value = binding.value
            if not isinstance(value, relax.Call) or not any(a.same_as(current) for a in value.args):
                continue
            name = getattr(value.op, "name", "")
            if name == "relax.permute_dims":
                axes = _py(value.attrs.axes) if value.attrs.axes is not None else [3, 2, 1, 0]
                q, current = [q[a] for a in axes], binding.var
            elif name in ("relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
                attrs = value.attrs
                layout = str(getattr(attrs, "data_layout", None) or attrs.layout)
                required = _layout_perm(layout)
                p = [0] * 4
                for i in range(4):
                    p[q[i]] = required[i]
                return tuple(p)
            elif name in _UNARY or name in _BINARY or name in ("relax.clip", "relax.nn.pad"):
                current = binding.var  # keeps the axes' meaning (TFLite ResNet101 pads first)
            else:
                break
        return NCHW

    def _to_perm(self, value: _Value, wanted: tuple[int, ...], var: Any) -> _Value:
        """Make a layout-sensitive op's input hold the logical axes it assumes: when it does not,
        the op really reads a transposed tensor, made explicit as a logical ``transpose``."""
        if value.perm == wanted:
            return value
        axes = [0] * len(wanted)
        for i in range(len(wanted)):
            axes[wanted[i]] = value.perm[i]
        logical = _logical(value.shape, wanted)
        lid = self._add(
            Layer(
                f"{_name(var)}_layout",
                "transpose",
                [value.layer],
                {"axes": axes},
                logical,
                source="layout mismatch",
            )
        )
        if value.layer in self.tensors:  # the same data, read in the wanted axis order
            self.tensors[lid] = (self.tensors[value.layer][0], wanted)
        return _Value(lid, value.shape, wanted)

    def _layer(
        self,
        var: Any,
        op: str,
        inputs: list[_Value],
        perm: tuple[int, ...],
        attrs: dict[str, Any] | None = None,
        params: dict[str, np.ndarray] | None = None,
        source: str = "",
    ) -> _Value:
        shape = _shape(var.ty)
        layer = Layer(
            _name(var),
            op,
            [v.layer for v in inputs],
            attrs or {},
            _logical(shape, perm),
            {k: np.asarray(v, dtype=np.float32) for k, v in (params or {}).items()},
            source=f"{source} {_name(var)}".strip(),
        )
        lid = self._add(layer)
        self.tensors[lid] = (var, perm)
        return _Value(lid, shape, perm)

    # -- one binding ------------------------------------------------------------------------

    def _bind(self, var: Any, value: Any) -> Any:
        from tvm import relax

        if isinstance(value, relax.TupleGetItem):
            tup = self._resolve(value.tuple_value)
            return tup[value.index] if isinstance(tup, list) else tup
        if not isinstance(value, relax.Call):
            return self._resolve(value)
        op = value.op
        if isinstance(op, relax.ExternFunc) or not hasattr(op, "name"):
            return self._call_tir_or_other(var, value)
        name = op.name
        if name == "relax.call_tir":
            return self._call_tir_or_other(var, value)
        args = [self._resolve(a) for a in value.args]
        if all(not isinstance(a, _Value) for a in _flat(args)):
            folded = _fold(name, args, value, var)
            if folded is not None:
                return folded
        return self._convert(var, name, value, args)

    def _convert(self, var: Any, name: str, call: Any, args: list[Any]) -> Any:
        attrs = call.attrs
        x = args[0]
        if name == "relax.permute_dims" and isinstance(x, _Value):
            axes = _py(attrs.axes) if attrs.axes is not None else list(range(len(x.shape)))[::-1]
            perm = tuple(x.perm[a] for a in axes)
            return self._layer(var, "identity", [x], perm, {"tvm_op": "permute_dims"}, None, name)
        if name == "relax.nn.conv2d":
            return self._conv(var, call, x, args[1])
        if name in ("relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
            return self._pool(var, name, attrs, x)
        if name == "relax.nn.adaptive_avg_pool2d":
            x = self._to_perm(x, _layout_perm(str(attrs.layout)), var)
            if _py(attrs.output_size) not in ([1, 1], [1], 1):
                return self._other(var, name, args)
            out = _layout_perm(str(attrs.out_layout or attrs.layout))
            return self._layer(var, "pool_global_avg", [x], out, {"keepdims": True}, None, name)
        if name == "relax.mean" and isinstance(x, _Value):
            return self._mean(var, attrs, x, name)
        if name in _SHAPE_OPS and isinstance(x, _Value):
            return self._reshape(var, name, x)
        if name in _BINARY:
            return self._binary(var, _BINARY[name], args, name)
        if name in _UNARY:
            return self._layer(var, _UNARY[name], [x], x.perm, None, None, name)
        if name == "relax.clip":
            lo, hi = float(args[1]), float(args[2])
            return self._layer(var, "clip", [x], x.perm, {"min": lo, "max": hi}, None, name)
        if name in ("relax.nn.softmax", "relax.nn.log_softmax"):
            axis = _py(attrs.axis) % len(x.shape)
            attrs_out = {"axis": x.perm[axis], "log": name.endswith("log_softmax")}
            return self._layer(var, "softmax", [x], x.perm, attrs_out, None, name)
        if name == "relax.nn.batch_norm":
            return self._batch_norm(var, attrs, args, name)
        if name == "relax.matmul":
            return self._matmul(var, args, name)
        if name == "relax.concat":
            return self._concat(var, attrs, args, name)
        if name == "relax.nn.pad":
            return self._pad(var, attrs, args, name)
        if name == "relax.image.resize2d" and isinstance(x, _Value):
            return self._resize(var, attrs, x, name)
        if name == "relax.astype" and isinstance(x, _Value):
            attrs_out = {"tvm_op": "astype", "dtype": str(attrs.dtype)}
            return self._layer(var, "identity", [x], x.perm, attrs_out, None, name)
        return self._other(var, name, args)

    def _other(self, var: Any, name: str, args: list[Any]) -> _Value:
        values = [a for a in _flat(args) if isinstance(a, _Value)]
        consts = {f"arg{i}": a for i, a in enumerate(args) if isinstance(a, np.ndarray)}
        consts = {k: v for k, v in consts.items() if v.dtype.kind == "f"}
        ndim = len(_shape(var.ty))
        perm = values[0].perm if values and len(values[0].perm) == ndim else _ident(ndim)
        return self._layer(var, "other", values, perm, {"tvm_op": name}, consts, name)

    def _call_tir_or_other(self, var: Any, call: Any) -> Any:
        """``call_tir`` of a PrimFunc that is a plain elementwise op (ONNX Clip gives these)."""
        gv, tir_args = call.args[0], call.args[1]
        args = self._resolve(tir_args)
        # TVM numbers PrimFuncs that differ in shape: maximum, maximum1, maximum7, ...
        fname = _name(gv).rstrip("0123456789")
        if fname in _PRIM_BINARY and len(args) == 2:
            if all(not isinstance(a, _Value) for a in args):
                return _FOLD_BINARY[f"relax.{fname}"](args[0], args[1])
            return self._binary(var, _PRIM_BINARY[fname], args, f"call_tir {fname}")
        return self._other(var, f"call_tir {fname}", args)

    def _conv(self, var: Any, call: Any, x: _Value, weight: Any) -> _Value:
        attrs = call.attrs
        x = self._to_perm(x, _layout_perm(str(attrs.data_layout)), var)
        out_perm = _layout_perm(str(attrs.out_layout or attrs.data_layout))
        params = {}
        if isinstance(weight, np.ndarray):
            kernel_layout = str(attrs.kernel_layout)
            params["weight"] = weight.transpose([kernel_layout.index(c) for c in "OIHW"])
        attrs_out = {
            "strides": _py(attrs.strides),
            "pads": _pads4(_py(attrs.padding)),
            "dilation": _py(attrs.dilation),
            "groups": int(attrs.groups),
        }
        if "weight" in params:
            attrs_out["kernel"] = list(params["weight"].shape[2:])
        inputs = [x] if isinstance(weight, np.ndarray) else [x, weight]
        return self._layer(var, "conv2d", inputs, out_perm, attrs_out, params, "relax.nn.conv2d")

    def _pool(self, var: Any, name: str, attrs: Any, x: _Value) -> _Value:
        x = self._to_perm(x, _layout_perm(str(attrs.layout)), var)
        out = _layout_perm(str(attrs.out_layout or attrs.layout))
        op = "pool_max" if "max" in name else "pool_avg"
        attrs_out = {
            "kernel": _py(attrs.pool_size),
            "strides": _py(attrs.strides),
            "pads": _pads4(_py(attrs.padding)),
            "dilation": _py(attrs.dilation),
            "ceil_mode": bool(attrs.ceil_mode),
        }
        if op == "pool_avg":
            attrs_out["count_include_pad"] = bool(attrs.count_include_pad)
        return self._layer(var, op, [x], out, attrs_out, None, name)

    def _mean(self, var: Any, attrs: Any, x: _Value, name: str) -> _Value:
        ndim = len(x.shape)
        axes = _py(attrs.axis) if attrs.axis is not None else list(range(ndim))
        axes = sorted(a % ndim for a in axes)
        logical_axes = sorted(x.perm[a] for a in axes)
        keep = bool(attrs.keepdims)
        if keep:
            perm = x.perm
        else:
            kept = [x.perm[i] for i in range(ndim) if i not in axes]
            perm = tuple(int(r) for r in np.argsort(np.argsort(kept)))
        if ndim == 4 and logical_axes == [2, 3]:
            return self._layer(var, "pool_global_avg", [x], perm, {"keepdims": keep}, None, name)
        attrs_out = {"axes": logical_axes, "keepdims": keep}
        return self._layer(var, "mean", [x], perm, attrs_out, None, name)

    def _reshape(self, var: Any, name: str, x: _Value) -> _Value:
        out = _shape(var.ty)
        src = x.shape
        if [d for d in src if d != 1] == [d for d in out if d != 1]:
            perm = x.perm if len(out) == len(src) else _ident(len(out))
            attrs = {"tvm_op": name.split(".")[-1], "noise": True, "shape": out}
            return self._layer(var, "reshape", [x], perm, attrs, None, name)
        if len(src) == 4 and len(out) == 2 and out[0] == src[0]:
            order = [x.perm[i] for i in range(1, 4)]
            return self._layer(var, "flatten", [x], (0, 1), {"order": order}, None, name)
        attrs = {"tvm_op": name.split(".")[-1], "noise": False, "shape": out}
        return self._layer(var, "reshape", [x], _ident(len(out)), attrs, None, name)

    def _binary(self, var: Any, op: str, args: list[Any], source: str) -> _Value:
        a, b = args[0], args[1]
        if isinstance(a, _Value) and isinstance(b, _Value):
            if a.perm != b.perm and len(a.perm) == len(b.perm):
                b = self._to_perm(b, a.perm, var)
            return self._layer(var, op, [a, b], a.perm, None, None, source)
        value, const = (a, b) if isinstance(a, _Value) else (b, a)
        attrs = {} if isinstance(a, _Value) else {"const_first": True}
        ndim = len(value.shape)
        c = np.asarray(const, dtype=np.float32)
        c = c.reshape((1,) * (ndim - c.ndim) + c.shape) if c.ndim < ndim else c
        if c.ndim == ndim and ndim > 1:
            c = c.transpose(np.argsort(value.perm))
        return self._layer(var, op, [value], value.perm, attrs, {"const": c}, source)

    def _batch_norm(self, var: Any, attrs: Any, args: list[Any], name: str) -> list[Any]:
        x = args[0]
        axis = _py(attrs.axis) % len(x.shape)
        names = ("gamma", "beta", "mean", "var")
        params = dict(zip(names, args[1:5], strict=True))
        attrs_out = {
            "epsilon": float(attrs.epsilon),
            "axis": x.perm[axis],
            "center": bool(attrs.center),
            "scale": bool(attrs.scale),
            "training": bool(getattr(attrs, "training", False)),
        }
        # the Relax op returns (out, new_mean, new_var): give the whole tuple the layer value
        shape = _shape(var.ty.fields[0])
        layer = Layer(
            _name(var),
            "batch_norm",
            [x.layer],
            attrs_out,
            _logical(shape, x.perm),
            {k: np.asarray(v, dtype=np.float32) for k, v in params.items()},
            source=f"{name} {_name(var)}",
        )
        value = _Value(self._add(layer), shape, x.perm)
        self.tensors[value.layer] = (var, x.perm)  # a tuple var: its field 0 is the output
        return [value, params["mean"], params["var"]]

    def _matmul(self, var: Any, args: list[Any], name: str) -> _Value:
        x, w = args
        if isinstance(x, _Value) and isinstance(w, np.ndarray) and w.ndim == 2:
            attrs = {"units": int(w.shape[1])}
            return self._layer(var, "dense", [x], x.perm, attrs, {"weight": w.T}, name)
        return self._other(var, name, args)

    def _concat(self, var: Any, attrs: Any, args: list[Any], name: str) -> _Value:
        parts = args[0] if isinstance(args[0], list) else args
        values = [p for p in parts if isinstance(p, _Value)]
        if len(values) != len(parts):
            return self._other(var, name, args)
        first = values[0]
        values = [first] + [self._to_perm(v, first.perm, var) for v in values[1:]]
        axis = _py(attrs.axis) % len(first.shape)
        return self._layer(
            var, "concat", values, first.perm, {"axis": first.perm[axis]}, None, name
        )

    def _pad(self, var: Any, attrs: Any, args: list[Any], name: str) -> _Value:
        x = args[0]
        width = _py(attrs.pad_width)
        ndim = len(x.shape)
        logical = [[0, 0] for _ in range(ndim)]
        for i in range(ndim):
            logical[x.perm[i]] = [width[2 * i], width[2 * i + 1]]
        value = args[1] if len(args) > 1 else _py(getattr(attrs, "pad_value", 0.0))
        attrs_out = {
            "pad_width": logical,
            "value": float(np.asarray(value)),
            "mode": str(attrs.pad_mode),
        }
        if ndim == 4:
            attrs_out["pads"] = [logical[2][0], logical[3][0], logical[2][1], logical[3][1]]
            attrs_out["spatial_only"] = logical[0] == [0, 0] and logical[1] == [0, 0]
        return self._layer(var, "pad", [x], x.perm, attrs_out, None, name)

    def _resize(self, var: Any, attrs: Any, x: _Value, name: str) -> _Value:
        """``resize2d`` with the attributes that change its values, normalized so that equal
        computations compare equal: ``method`` nearest/linear/cubic; ``coordinate_mode``
        (pytorch_half_pixel is half_pixel for outputs larger than 1); ``rounding`` for nearest
        only (TVM's empty default spelled out: round for align_corners, else floor);
        ``cubic_alpha``/``cubic_exclude`` for cubic only; the output ``size`` [H, W] and the
        ``scale`` out/in per axis (what ONNX scales or a TFLite size tensor said)."""
        perm = _layout_perm(str(attrs.layout))
        x = self._to_perm(x, perm, var)
        size = _logical(_shape(var.ty), perm)[2:]
        size_in = _logical(x.shape, perm)[2:]
        method = {"nearest_neighbor": "nearest"}.get(str(attrs.method), str(attrs.method))
        coord = str(attrs.coordinate_transformation_mode)
        if coord == "pytorch_half_pixel" and all(d > 1 for d in size):
            coord = "half_pixel"
        attrs_out: dict[str, Any] = {"method": method, "coordinate_mode": coord}
        if method == "nearest":
            rounding = str(attrs.rounding_method)
            attrs_out["rounding"] = rounding or ("round" if coord == "align_corners" else "floor")
        if method == "cubic":
            attrs_out["cubic_alpha"] = float(attrs.cubic_alpha)
            attrs_out["cubic_exclude"] = int(attrs.cubic_exclude)
        attrs_out["size"] = size
        attrs_out["scale"] = [
            round(o / i, 6) if o > 0 and i > 0 else -1.0 for o, i in zip(size, size_in, strict=True)
        ]
        return self._layer(var, "resize", [x], perm, attrs_out, None, name)


# -- small conversions -------------------------------------------------------------------------


def _fold(name: str, args: list[Any], call: Any, var: Any) -> np.ndarray | None:
    """Evaluate an op on constants with numpy (weight transposes, bias reshapes, ...)."""
    if name in _FOLD_UNARY:
        return _FOLD_UNARY[name](args[0])
    if name in _FOLD_BINARY:
        return _FOLD_BINARY[name](args[0], args[1])
    if name == "relax.where":
        return np.where(args[0], args[1], args[2])
    if name == "relax.permute_dims":
        axes = _py(call.attrs.axes) if call.attrs.axes is not None else None
        return np.transpose(args[0], axes)
    if name in _SHAPE_OPS:
        shape = _shape(var.ty)
        if any(d < 0 for d in shape):
            return None
        return np.reshape(args[0], shape)
    if name == "relax.astype":
        return np.asarray(args[0]).astype(str(call.attrs.dtype))
    return None


def _py(value: Any) -> Any:
    """TVM attribute values (Array, IntImm, FloatImm, String) as plain Python."""
    if value is None:
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "value") and not hasattr(value, "__len__"):
        return value.value
    try:
        return [_py(v) for v in value]
    except TypeError:
        return str(value)


def _shape(struct_info: Any) -> list[int]:
    shape = getattr(struct_info, "shape", None)
    values = getattr(shape, "values", None)
    if values is None:
        return []
    return [int(v) if hasattr(v, "value") else -1 for v in values]


def _ident(n: int) -> tuple[int, ...]:
    return tuple(range(n))


def _flat(args: list[Any]) -> list[Any]:
    out = []
    for a in args:
        out.extend(_flat(a) if isinstance(a, list) else [a])
    return out


def _layout_perm(layout: str) -> tuple[int, ...]:
    if layout == "NCHW":
        return NCHW
    if layout == "NHWC":
        return NHWC
    raise ValueError(f"unsupported layout {layout!r}")


def _logical(shape: list[int], perm: tuple[int, ...]) -> list[int]:
    """The logical shape of a tensor whose physical axis i holds logical axis perm[i]."""
    if len(perm) != len(shape):
        return list(shape)
    logical = [0] * len(shape)
    for i, label in enumerate(perm):
        logical[label] = shape[i]
    return logical


def _pads4(padding: list[int]) -> list[int]:
    """Relax padding of 1, 2 or 4 values as [top, left, bottom, right]."""
    if len(padding) == 1:
        return padding * 4
    if len(padding) == 2:
        return [padding[0], padding[1], padding[0], padding[1]]
    return list(padding)


def _name(var: Any) -> str:
    """A Relax Var's or GlobalVar's name (``name`` in TVM 0.27, ``name_hint`` before)."""
    name = getattr(var, "name_hint", None) or getattr(var, "name", None)
    return str(name) if name is not None else ""

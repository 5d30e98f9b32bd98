"""Loading a model file into a Relax module, one TVM frontend per framework.

Runs only in a worker of kind ``tvm`` (see :mod:`convdiff.ir.tvm`). Every frontend is called
with keep_params_in_input=False / keep_params_as_input=False, so the weights are Relax
constants visible in the IR. Each workaround below exists because the frontend, as shipped in
TVM 0.27, refuses or obscures something a converted model really contains:

- onnx: ``relax.frontend.onnx.from_onnx``. Legacy torch exports compute their pads at run time
  and are refused ("Dynamic pads are not supported yet"); such a model's Pad widths are
  evaluated with onnxruntime and written as constants (:mod:`convdiff.ir.onnx_fold`), or, if
  TVM still refuses it, the model is simplified with onnxslim; either rewrite is imported only
  once onnxruntime shows it computes what the file computes (onnxslim 0.1.98 folds
  open_nsfw's bottom/right edge Pad to the top/left), and the graph's ``meta["notes"]`` says
  which (:func:`_load_rewritten`). Constant Pads and
  constant Gathers are imported as the other frontends import them (:func:`_load_onnx`).
  TVM refuses ``ConvInteger`` (onnxruntime's ``quantize_dynamic``) and imports QDQ pairs as
  quantize/dequantize ops the float source has not: a file with quantized ops is always
  imported from its *float twin* (:func:`convdiff.ir.onnx_quant.float_twin`: each quantized op
  as its float op on the dequantized weights, activation quantization dropped), with the
  integers kept in ``quant.npz`` as evidence, as for TFLite below.
- tflite: ``relax.frontend.tflite.from_tflite``. It refuses dynamic-range quantized files
  (``OpNotImplemented``: "...likely to have dynamic range quantization: 'CONV_2D'..."): the
  refusal is recorded, and the model is imported from its *float twin*
  (:func:`convdiff.ir.tflite_quant.float_twin`: the file with each int8 weight replaced by its
  dequantized float32 values); the int8 values and scales are kept in ``quant.npz`` as
  evidence. A full-integer file (``--tflite-opt int8``) TVM imports, but as quantize/dequantize
  calls around every op, its weights behind ``dequantize``: no layer would hold a weight, so it
  is always imported from its float twin (weights and biases dequantized, activations float,
  QUANTIZE/DEQUANTIZE dropped), as a quantized ONNX file is. TVM 0.27's RESHAPE converter
  also refuses a shape tensor computed at run time (SHAPE -> STRIDED_SLICE -> PACK, which
  onnx2keras' Flatten becomes); :func:`_tflite_converter` then uses the output tensor's shape
  recorded in the flatbuffer (the inputs are imported with their static shapes, so a -1 batch
  in its shape signature is 1 here).
- torch: ``torch.export.load`` + ``relax.frontend.torch.from_exported_program`` (eval-mode
  BatchNorm stays one ``batch_norm`` op). onnx2torch turns a constant ONNX Gather index into
  ``aten.item`` of a buffer, and TVM 0.27's ``select`` takes only a Python int
  ("value has to be scalar or Tensor", torchvision InceptionV3's ``transform_input``), and
  TVM cannot compile a ``slice_scatter`` whose end is the symbolic batch (timm GhostNet):
  :mod:`convdiff.ir.tvm.torch_fixes` rewrites the program first. TVM has no
  TorchScript frontend: a .pt file takes the route ``torchscript -> onnx``
  (:mod:`convdiff.ir.tvm.torchscript`), exported to ONNX in the work folder and imported as
  ONNX; the note says so.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convdiff.ir import tflite_quant
from convdiff.ir.tvm import torch_fixes, torchscript

TVM_FRAMEWORKS = ("onnx", "tflite", "torch")


@dataclass
class Imported:
    """A Relax module and how it was obtained."""

    mod: Any
    notes: list[str]
    refused: str | None = None  # the frontend's refusal of the file itself, if any
    quant_npz: str | None = None
    twin: str | None = None  # the float twin imported in the file's place, if any


def load_module(framework: str, path: str, work_dir: Path | None = None) -> Imported:
    """Import ``path`` with TVM's frontend for ``framework`` (see the module docstring)."""
    if framework == "onnx":
        return _load_onnx(path, work_dir or Path(path).parent)
    if framework == "tflite":
        return _load_tflite(path, work_dir or Path(path).parent)
    if framework == "torch":
        return _load_torch(path, work_dir)
    raise ValueError(
        f"TVM has no frontend for {framework!r}; expected one of {TVM_FRAMEWORKS} "
        "(Keras/TF go through a converter first: commands.localize.imports.import_via_pool)"
    )


def _load_onnx(path: str, work_dir: Path) -> Imported:
    """ONNX through TVM's frontend, with two ops imported as the other frontends do; a file
    with quantized ops through its float twin, written with ``quant.npz`` into ``work_dir``.

    TVM 0.27's ONNX Pad converter emits ``call_tir(pad)`` (a TE kernel whose widths live only in
    TIR), batch static or not, so canonicalization could not fold tf2onnx's Pad into the next
    Conv as it folds TFLite's PAD (a relax.nn.pad): MobileNetV2's four stride-2 depthwise convs
    then looked unpadded. :func:`_onnx_importer` emits the Relax op instead.

    A Gather of constant non-negative indices becomes a plain ``take``: TVM wraps every index
    in run-time arithmetic on the input's shape (``where(i < 0, i + shape_of(x)[axis], i)``),
    which the .pt2 import of the same model has not (torchvision InceptionV3's
    transform_input: 3 takes became 7 ``other`` layers each and nothing aligned)."""
    import onnx

    from convdiff.ir import onnx_quant  # imports onnx: inside the worker only

    model = onnx.load(path)
    notes: list[str] = []
    quant_npz = twin = None
    if onnx_quant.has_quantized_ops(model):
        report = onnx_quant.read(path)
        work_dir.mkdir(parents=True, exist_ok=True)
        twin = str(onnx_quant.float_twin(path, work_dir / "float_twin.onnx"))
        model = onnx.load(twin)
        quant_npz = str(report.save(work_dir / "quant.npz"))
        weights = ", ".join(w.node for w in report.weights) or "none"
        notes.append(
            "quantized ONNX file: imported its float twin (weights dequantized, activation "
            f"quantization dropped; quantized weights of: {weights})"
        )
    try:
        return Imported(_from_onnx(model), notes, quant_npz=quant_npz, twin=twin)
    except Exception as exc:  # the frontend's refusal: run-time Pad widths, most often
        first = f"{type(exc).__name__}: {_one_line(exc)}"
    mod, note = _load_rewritten(model, first)
    notes.append(note)
    return Imported(mod, notes, quant_npz=quant_npz, twin=twin)


def _load_rewritten(model: Any, refusal: str) -> tuple[Any, str]:
    """A file TVM refused (``refusal``), imported from a rewrite that computes what it computes
    (:mod:`convdiff.ir.onnx_fold`), and the note that says which: its run-time Pad widths
    evaluated by onnxruntime, else onnxslim's simplification. Each rewrite is checked against
    the file on onnxruntime first, since onnxslim can fold a Pad's widths wrong (open_nsfw's
    edge Pad to the top/left instead of the bottom/right); one that departs from the file is
    refused: importing it would localize onnxslim's fault, not the converter's."""
    import onnxslim

    from convdiff.ir import onnx_fold  # imports onnx: inside the worker only

    folded, pads = onnx_fold.fold_runtime_pads(model)
    if pads:
        widths = "; ".join(f"{name} {value}" for name, value in pads.items())
        how = f"with its run-time Pad widths evaluated by onnxruntime ({widths})"
        try:
            mod = _from_onnx(folded)
        except Exception:  # refused for another cause too: onnxslim may remove it
            mod = None
        if mod is not None:
            return mod, _checked(model, folded, refusal, how)
    slimmed = onnxslim.slim(folded)
    note = _checked(model, slimmed, refusal, "after onnxslim")
    return _from_onnx(slimmed), note


def _checked(original: Any, rewritten: Any, refusal: str, how: str) -> str:
    """The note for importing ``rewritten`` in the place of ``original`` ``how``, once
    onnxruntime shows that it computes what the original computes on a random input (a
    RuntimeError when it does not); the note says so when onnxruntime cannot run them."""
    from convdiff.ir import onnx_fold

    note = f"onnx frontend refused the file ({refusal}); imported {how}"
    try:
        differs = onnx_fold.max_difference(original, rewritten)
    except Exception as exc:  # onnxruntime refuses them too: import unchecked, and say so
        return f"{note} (not checked on onnxruntime: {type(exc).__name__}: {_one_line(exc)[:200]})"
    if differs > onnx_fold.TOLERANCE:
        raise RuntimeError(
            f"onnx frontend refused the file ({refusal}); the rewrite to import {how} computes "
            f"otherwise on onnxruntime (max|diff| {differs:.3g} of 1 + max|y| on a random input): "
            "not imported"
        )
    return f"{note} (onnxruntime: max|diff| {differs:.2g} from the file on a random input)"


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
    """TFLite through TVM's frontend; a dynamic-range quantized file it refuses, and any
    full-integer file, is imported from its float twin, written with ``quant.npz`` into
    ``work_dir`` (module docstring)."""
    import tflite
    from tvm.relax.frontend.tflite import from_tflite

    def convert(buf: bytes) -> Any:
        model = tflite.Model.GetRootAsModel(buf, 0)
        return from_tflite(
            model, shape_dict=_tflite_input_shapes(model), op_converter=_tflite_converter()
        )

    buf = Path(path).read_bytes()
    notes: list[str] = []
    refused = None
    if tflite_quant.is_full_integer(path):
        report = tflite_quant.read(path)
        layers = tflite_quant.quantized_ops(path)
        notes.append(
            "full-integer TFLite file: imported its float twin (int8 weights and int32 biases "
            "dequantized, activations float, QUANTIZE/DEQUANTIZE ops dropped; "
            f"{len(layers)} layers compute in integers: {', '.join(op.name for op in layers)})"
        )
    else:
        try:
            return Imported(convert(buf), notes)
        except Exception as exc:
            refused = f"{type(exc).__name__}: {_one_line(exc)}"
            report = tflite_quant.read(path)
            if not report.quantized:
                raise
        notes.append(
            "TVM's TFLite frontend refused the file; imported its float twin (int8 weights "
            f"dequantized from the flatbuffer: {', '.join(t.name for t in report.quantized)})"
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    twin = tflite_quant.float_twin(path, work_dir / "float_twin.tflite")
    quant_npz = report.save(work_dir / "quant.npz")
    mod = convert(Path(twin).read_bytes())
    return Imported(mod, notes, refused, str(quant_npz), str(twin))


def _tflite_input_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """The inputs' static shapes (a dynamic one is left to the frontend): a -1 batch in a
    shape signature is imported as the 1 its shape records."""
    graph = model.Subgraphs(0)
    shapes: dict[str, tuple[int, ...]] = {}
    for i in graph.InputsAsNumpy():
        tensor = graph.Tensors(int(i))
        shape = tuple(int(d) for d in tensor.ShapeAsNumpy())
        if all(d > 0 for d in shape):
            shapes[tensor.Name().decode()] = shape
    return shapes


def _tflite_converter() -> type:
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


def _load_torch(path: str, work_dir: Path | None) -> Imported:
    """A torch.export program (.pt2) through ``from_exported_program``, its constant
    ``aten.item`` folded first; any other torch file by the route ``torchscript -> onnx``,
    its ONNX written into ``work_dir`` (a temporary folder when None: never beside the
    user's file) (module docstring)."""
    from tvm.relax.frontend.torch import from_exported_program

    from convdiff.frameworks.torch import load_program

    if not path.endswith(".pt2"):
        return _load_torchscript(path, work_dir)
    program = load_program(path)  # safe by default: no pickled payload runs (core.trust)
    notes = torch_fixes.prepare(program)
    mod = from_exported_program(
        program, keep_params_as_input=False, custom_convert_map=torch_fixes.convert_map()
    )
    return Imported(mod, notes)


def _load_torchscript(path: str, work_dir: Path | None) -> Imported:
    """TorchScript exported to ONNX (:func:`torchscript.export_onnx`), then imported as ONNX;
    the route's note comes first."""
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="convdiff-torchscript-") as tmp:
            return _load_torchscript(path, Path(tmp))
    onnx_path, note = torchscript.export_onnx(path, work_dir)
    imported = _load_onnx(str(onnx_path), work_dir)
    imported.notes.insert(0, note)
    return imported


def _one_line(exc: BaseException) -> str:
    """A frontend's multi-line refusal as one note line (at most 600 characters)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return " | ".join(lines)[:600]

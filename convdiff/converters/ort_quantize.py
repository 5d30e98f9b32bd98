"""ONNX -> quantized ONNX with ``onnxruntime.quantization`` (``--ort-quant dynamic|static-qdq``).

A *transform*: the edge runs from onnx to onnx, appended at the end of a chain whose target is
ONNX when ``ort_quant`` is not ``none`` (``convdiff run model.onnx --dst onnx --ort-quant
dynamic`` is this hop alone). Both modes first run ``quant_pre_process`` -- onnxruntime's
recommended preparation (symbolic and ONNX shape inference, its basic graph optimizations:
constants folded, BatchNormalization fused into the Conv before it) -- which both quantizers
ask for with a warning when it is missing. Both modes then quantize the same float graph, so
their discrepancies differ by the quantization alone. Measured with onnxruntime 1.32.0:

- ``dynamic``: ``quantize_dynamic`` with int8 weights (``QuantType.QInt8``, the quantizer's
  default and what onnxruntime's examples use), per tensor, no reduced range -- the call people
  make. Conv becomes ``ConvInteger`` and MatMul/Gemm ``MatMulInteger``, each fed by a
  ``DynamicQuantizeLinear`` that quantizes the activation to uint8 per image at run time (the
  quantizer allows no other activation type). Needs no images.
- ``static-qdq``: ``quantize_static`` in ``QuantFormat.QDQ`` (the format onnxruntime
  recommends since 1.11: float ops between ``QuantizeLinear -> DequantizeLinear`` pairs, which
  its CPU kernels fuse into integer ones), calibrated by MinMax on the run's own images (the
  ``calibration`` npz). Weights int8, symmetric, per output channel (``per_channel=True``:
  depthwise and BN-fused convs have per-channel ranges that one scale per tensor ruins).
  Activations **uint8** (asymmetric): onnxruntime 1.32's own guidance for x86 CPUs, the runtime
  convdiff runs the target on, is U8S8 -- and a post-ReLU tensor then uses all 256 levels on
  [0, max]. ``reduce_range=False``: the file's numbers do not depend on the machine that
  quantized it, and this machine's VNNI kernels accumulate without saturation; 7-bit weights
  would cost every user accuracy to help pre-VNNI CPUs only. ``CalibMaxIntermediateOutputs``
  stays unset: in 1.32 the MinMax calibrator drops every full chunk unmeasured (onnxruntime
  issue #18893; 16 images in chunks of 4 end in "No data is collected."), and MinMax keeps only
  each tensor's min and max per image anyway.

The images arrive as the run prepared them, float32 NHWC; a model whose input is NCHW (read
from its input shape, as the onnx runtime does) gets them transposed, one image per batch (or
the model's fixed batch size). What was done is written to ``ort_quantize.json`` beside the
model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from convdiff.converters import CALIBRATION_IMAGES, converter
from convdiff.core.arrays import read_images
from convdiff.core.options import ConvertOptions

SETTINGS: dict[str, dict[str, Any]] = {  # what each mode asks of the quantizer, for the record
    "dynamic": {
        "function": "quantize_dynamic",
        "weight_type": "QInt8",
        "activation_type": "QUInt8 (dynamic, per image)",
        "per_channel": False,
        "reduce_range": False,
    },
    "static-qdq": {
        "function": "quantize_static",
        "quant_format": "QDQ",
        "calibrate_method": "MinMax",
        "weight_type": "QInt8",
        "activation_type": "QUInt8",
        "per_channel": True,
        "reduce_range": False,
    },
}


@converter(
    "onnx",
    "onnx",
    tool="onnxruntime.quantization",
    worker="onnx",
    packages=("onnxruntime", "onnx"),
    options=("ort_quant",),
    name="ort-quantize",
    enabled_by="ort_quant",
    calibrate_when=("ort_quant=static-qdq",),
)
def quantize_onnx(
    src: Path,
    out_dir: Path,
    opts: ConvertOptions,
    input_shape: list[int | None] | None,
    calibration: Path | None = None,
) -> Path:
    """Quantize ``src`` as ``opts.ort_quant`` says (module docstring)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    mode = opts.ort_quant
    if mode not in SETTINGS:
        raise ValueError(f"ort_quant {mode!r} quantizes nothing; expected one of {list(SETTINGS)}")
    logging.getLogger().setLevel(logging.ERROR)  # the quantizers log every tensor they skip
    prepared = out_dir / "preprocessed.onnx"
    quant_pre_process(str(src), str(prepared))
    out = out_dir / f"model-{mode}.onnx"
    record: dict[str, Any] = {"tool": "onnxruntime.quantization", "mode": mode, **SETTINGS[mode]}
    if mode == "dynamic":
        quantize_dynamic(str(prepared), str(out), weight_type=QuantType.QInt8)
    else:
        if calibration is None:
            raise ValueError("static-qdq quantization needs calibration images; none were given")
        reader = CalibrationImages(prepared, calibration)
        quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=False,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
        record |= {"calibration_images": reader.images, "calibration_layout": reader.layout}
    prepared.unlink()
    (out_dir / "ort_quantize.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


class CalibrationImages:
    """onnxruntime's ``CalibrationDataReader`` over the run's images (an .npz whose ``x`` is
    float32 NHWC): transposed to the model's layout, one image per feed (or the model's fixed
    batch; a last partial batch is left out)."""

    def __init__(self, model: Path, images: Path) -> None:
        import numpy as np
        import onnx

        from convdiff.frameworks import layout_of

        proto = onnx.load(str(model), load_external_data=False)
        init = {i.name for i in proto.graph.initializer}
        first = next(i for i in proto.graph.input if i.name not in init)
        dims = first.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
        self.layout = layout_of(shape, "NCHW")
        x = read_images(images, limit=CALIBRATION_IMAGES)
        if self.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        batch = shape[0] if shape and shape[0] else 1
        self.images = len(x) // batch * batch
        self._feeds = iter(
            {first.name: np.ascontiguousarray(x[i : i + batch])}
            for i in range(0, self.images, batch)
        )

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)

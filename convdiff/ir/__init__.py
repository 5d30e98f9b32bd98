"""TVM Relax import and the canonical layer graph, the ground the four localization stages
stand on.

- :mod:`convdiff.ir.graph`: :class:`~convdiff.ir.graph.CanonicalGraph` and its layers
  (framework-neutral; JSON + npz).
- :mod:`convdiff.ir.tvm`: child side, run in a ``tvm`` worker: import a model with TVM's
  Relax frontends (onnx, tflite, torch .pt2; TorchScript through ONNX; ``frontends``),
  read its layer graph (``extract``, with one registered converter per op family in
  ``ops``), or compile it for llvm and run it as an independent runtime (``execute``);
  ``tasks`` holds the worker's entry points.
- :mod:`convdiff.ir.tflite_quant`: int8 weights, scales and zero points read from a .tflite
  flatbuffer (for the dynamic-range files TVM refuses).
- :mod:`convdiff.ir.canonicalize` and :mod:`convdiff.ir.align`: pure numpy, run anywhere.

Worker kind ``tvm``: TVM never shares a process with TensorFlow (not shown safe, and TF is
not needed: the ``tflite`` package reads flatbuffers without it). It does import torch, for
``from_exported_program`` needs the ExportedProgram object in the same process; measured here:
torch 2.14 + TVM 0.27 in one worker import and run a .pt2 fine (first import 8.6 s, 0.9 GB).

Keras and SavedModel models have no TVM frontend. The localize command
(:func:`convdiff.commands.localize.imports.import_via_pool`) takes them through
one converter in a ``tf`` worker first, at full float precision: ``route="tflite"``
(TFLiteConverter without optimization: float32 weights bit for bit; it folds BatchNorm and fuses
activations, which canonicalization undoes anyway) or ``route="onnx"`` (tf2onnx). Choose the
route that is *not* the conversion under test, so the tool being judged does not also produce
the reference: :func:`keras_route` does that.
"""

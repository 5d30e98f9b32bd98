"""Child side: import a model into Apache TVM Relax, read its canonical layer graph, run it.

Runs only in a worker of kind ``tvm`` (TVM 0.27; Relay no longer exists). That worker imports
TVM, onnx, onnxslim, onnxruntime (run-time Pad widths), the ``tflite`` flatbuffer package and,
for torch files, torch -- never TensorFlow or Keras (see :mod:`convdiff.ir` for why torch may
share the process and TF may not). Every heavy import lives inside a function, so the
orchestrator can import these modules.

- :mod:`~convdiff.ir.tvm.frontends`: a model file -> a Relax module, per framework, with the
  workarounds the frontends need and why; :mod:`~convdiff.ir.tvm.torchscript`: the route
  ``torchscript -> onnx`` for TorchScript files, which no TVM frontend reads.
- :mod:`~convdiff.ir.tvm.extract`: a Relax module -> the raw canonical graph: walks ``main``,
  folds constants and hands each call to its converter in :mod:`~convdiff.ir.tvm.ops` (one
  registered function per op family), which adds layers to a
  :class:`~convdiff.ir.tvm.builder.GraphBuilder`.
- :mod:`~convdiff.ir.tvm.execute`: compile for llvm once, run batches, read activations.
- :mod:`~convdiff.ir.tvm.tasks`: the worker's entry points ``import_graph`` and ``run_tvm``.
"""

"""The bare framework work of a tf -> tflite check, with no convdiff: the benchmark's baseline.

Loads a SavedModel, runs it on a preprocessed batch, converts it with TFLiteConverter, runs the
.tflite with LiteRT, compares top-1 labels. One process, one import of each library: what a
person would write by hand. Prints its phase times as JSON on the last line.

    python scripts/bench_baseline_tf_tflite.py SAVED_MODEL_DIR INPUTS.npz OUT_DIR
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np


def main(saved_model: str, inputs: str, out_dir: str) -> None:
    times: dict[str, float] = {}
    started = time.perf_counter()
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    times["import"] = time.perf_counter() - started
    x = np.load(inputs)["x"].astype(np.float32)

    t = time.perf_counter()
    loaded = tf.saved_model.load(saved_model)
    serve = loaded.signatures["serving_default"]
    times["load"] = time.perf_counter() - t
    t = time.perf_counter()
    src = np.concatenate(
        [list(serve(tf.constant(x[i : i + 8])).values())[0].numpy() for i in range(0, len(x), 8)]
    )
    times["infer_src"] = time.perf_counter() - t

    t = time.perf_counter()
    flatbuffer = tf.lite.TFLiteConverter.from_saved_model(saved_model).convert()
    path = Path(out_dir) / "model.tflite"
    path.write_bytes(flatbuffer)
    times["convert"] = time.perf_counter() - t

    t = time.perf_counter()
    interpreter = Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(x.shape), strict=False)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    dst = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    times["infer_dst"] = time.perf_counter() - t

    top1 = float(np.mean(src.argmax(1) != dst.argmax(1)) * 100)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "top1_discrepancy": top1, "peak_rss_mb": peak}))


if __name__ == "__main__":
    main(*sys.argv[1:4])

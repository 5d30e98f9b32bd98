"""ONNX -> TFLite and ONNX -> TF SavedModel with onnx2tf, in its own environment.

onnx2tf (1.29.x, the releases for Python 3.11) pins TensorFlow 2.19, numpy 1.26, onnx 1.19.1
and onnxruntime 1.23.0, so it always runs in a tool environment (``env="onnx2tf"``, recipe
``convdiff/data/envs/onnx2tf.txt``) and only when named: ``--converter onnx2tf``. This code
runs there, under that environment's Python: it imports only the standard library, numpy and
the tool.

One ``onnx2tf.convert`` call (its Python API, ``non_verbose=True``) writes a SavedModel and a
float32 and a float16 .tflite. The tflite edge returns the float32 file, the tf edge the
SavedModel folder (``serving_default`` signature); the rest stays in the hop's folder. onnx2tf
transposes an NCHW model to NHWC input (``[1, 3, 224, 224]`` -> ``[1, 224, 224, 3]``), so the
target takes the run's NHWC images as they are while the ONNX source gets them transposed:
both see the same pixels (:func:`convdiff.runtime.tasks.infer`, layout ``auto``).

Three things are convdiff's, not the tool's:

- onnx2tf simplifies its input file *in place* (``onnxsim FILE FILE``): it is given a copy,
  ``model.onnx`` in the hop's folder, which is then the graph it actually converted. It runs
  ``onnxsim`` as a command, found on ``PATH``: the environment's ``bin`` goes first, or the
  simplification fails silently (a warning onnx2tf hides with ``non_verbose``).
- For a model with image input it downloads 20 sample images from GitHub (its
  ``calibration_image_sample_data_20x128x128x3_float32.npy``) to estimate shapes and check
  its transposes against onnxruntime op by op, unless that file is in the working directory.
  Nothing may download at run time, so the conversion runs in a work folder holding 20 seeded
  uniform [0, 1) images of that shape in its place (the sample images are [0, 1] RGB too).
- Its failures are ``sys.exit(1)`` after ``ERROR:`` lines on stdout, or an exception after
  naming the ONNX node it was converting. Its output goes to ``onnx2tf.log`` in the hop's
  folder, and a failure becomes one exception carrying onnx2tf's own reason and the node.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from pathlib import Path

from convdiff.converters import converter
from convdiff.core.options import ConvertOptions

PACKAGES = ("onnx2tf", "tensorflow", "onnx")
# what onnx2tf reads from its working directory instead of downloading it
SAMPLE_DATA = "calibration_image_sample_data_20x128x128x3_float32.npy"
SAMPLE_SEED = 0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NODE_DUMP = re.compile(r" for '\{\{node [^}]*\}\} = [^']*'")  # TF's "for '{{node x}} = Op[...]'"
# what onnx2tf prints after any failed node, whatever the cause (its utils.print_node_info)
_ADVICE = (
    "The trace log is below.",
    "input_onnx_file_path:",
    "onnx_op_name:",
    "Read this and deal with it.",
    "Alternatively, if the input OP has a dynamic dimension",
    "If the input OP of ONNX before conversion is NHWC",
    "Also, for models that include NonMaxSuppression",
)

# both edges of the tool, as @converter's keywords: used only when named, in its own env
ONNX2TF: dict = {
    "tool": "onnx2tf",
    "worker": "tf",
    "packages": PACKAGES,
    "name": "onnx2tf",
    "default": False,
    "env": "onnx2tf",
}


@converter("onnx", "tflite", **ONNX2TF)
def onnx_to_tflite(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    return _convert(src, out_dir.resolve(), "model_float32.tflite")


@converter("onnx", "tf", **ONNX2TF)
def onnx_to_tf(
    src: Path, out_dir: Path, opts: ConvertOptions, input_shape: list[int | None] | None
) -> Path:
    return _convert(src, out_dir.resolve(), "saved_model/saved_model.pb").parent


def _convert(src: Path, out_dir: Path, wanted: str) -> Path:
    """Run onnx2tf on a copy of ``src``: ``out_dir`` gets model.onnx (simplified),
    saved_model/, model_float32.tflite, model_float16.tflite, onnx2tf.log, onnx2tf.json.
    Returns the file ``wanted`` (onnx2tf may write one output and only log why not another)."""
    import numpy as np
    import onnx2tf

    model = out_dir / "model.onnx"
    shutil.copyfile(src, model)
    saved_model = out_dir / "saved_model"
    work = out_dir / "onnx2tf-work"
    work.mkdir(exist_ok=True)
    images = np.random.default_rng(SAMPLE_SEED).random((20, 128, 128, 3), dtype=np.float32)
    np.save(work / SAMPLE_DATA, images)
    log_path = out_dir / "onnx2tf.log"
    kept = _nhwc_inputs(model)
    try:
        with _tool_context(work, log_path):
            onnx2tf.convert(
                input_onnx_file_path=str(model),
                output_folder_path=str(saved_model),
                keep_nwc_or_nhwc_or_ndhwc_input_names=kept or None,
                non_verbose=True,
            )
    except SystemExit as exc:  # onnx2tf's way to give up, after its ERROR: lines
        raise RuntimeError(_reason(log_path) or f"onnx2tf exited with {exc.code}") from None
    except Exception as exc:
        raise RuntimeError(_reason(log_path, _exception_text(exc))) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for written in saved_model.glob("*.tflite"):  # the SavedModel folder holds only itself
        written.replace(out_dir / written.name)
    if not (out_dir / wanted).is_file():
        raise RuntimeError(_reason(log_path) or f"onnx2tf wrote no {wanted}")
    _record(out_dir, kept)
    return out_dir / wanted


def _nhwc_inputs(model: Path) -> list[str]:
    """The image inputs the ONNX model already takes NHWC (``[N, 224, 224, 3]``).

    onnx2tf takes every 4-D input for NCHW and moves its dimension 1 last: open_nsfw's
    ``[N, 224, 224, 3]`` input became ``[N, 224, 3, 224]`` (converted, but fed transposed
    images). Its answer is ``-kt NAME`` (``keep_nwc_or_nhwc_or_ndhwc_input_names``):
    convdiff passes it for every input whose shape says NHWC
    (:func:`convdiff.frameworks.layout_of`, the rule it feeds the source by).
    """
    import onnx

    from convdiff.frameworks import layout_of

    graph = onnx.load(str(model), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    kept = []
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
        if value.name not in weights and len(shape) == 4 and layout_of(shape, "NCHW") == "NHWC":
            kept.append(value.name)
    return kept


@contextlib.contextmanager
def _tool_context(work: Path, log_path: Path):
    """cwd = the work folder (sample images), the env's bin first on PATH (onnxsim), and
    onnx2tf's printed output into its log; all restored afterwards."""
    cwd, path = Path.cwd(), os.environ.get("PATH", "")
    bin_dir = Path(sys.executable).parent
    onnxsim = bin_dir / "onnxsim"
    if not _starts(onnxsim):  # onnx2tf would skip the simplification, saying nothing
        raise RuntimeError(f"the onnx2tf environment cannot run {onnxsim}: rebuild it")
    os.chdir(work)
    os.environ["PATH"] = os.pathsep.join([str(bin_dir), path])
    try:
        with open(log_path, "w") as log, contextlib.redirect_stdout(log):
            yield
    finally:
        os.chdir(cwd)
        os.environ["PATH"] = path


def _starts(script: Path) -> bool:
    """Whether a console script exists and names an interpreter that exists."""
    if not script.is_file():
        return False
    with open(script, "rb") as handle:
        first = handle.readline()
    return not first.startswith(b"#!") or Path(first[2:].split()[0].decode()).exists()


def _log_lines(log_path: Path) -> list[str]:
    if not log_path.is_file():
        return []
    text = log_path.read_text(errors="replace")
    return [_ANSI.sub("", line).strip() for line in text.splitlines()]


def _exception_text(exc: Exception) -> str:
    """``Type: message`` on one line, without the parts of a TF layer error that repeat the
    call (``Call arguments received ...``, the node's attribute dump)."""
    text = str(exc).split("Call arguments received", 1)[0]
    text = _NODE_DUMP.sub("", " ".join(line.strip() for line in text.splitlines() if line.strip()))
    return f"{type(exc).__name__}: {text}"


def _reason(log_path: Path, exc: str = "") -> str:
    """onnx2tf's own words for why it stopped: its ERROR: lines less the advice it prints
    after any failure, the ONNX node it names, and the exception it raised."""
    lines = [line for line in _log_lines(log_path) if line.startswith("ERROR:")]
    errors = [e for e in (line.removeprefix("ERROR:").strip() for line in lines) if e]
    nodes = [e.split(":", 1)[1].strip() for e in errors if e.startswith("onnx_op_name:")]
    said = [e for e in errors if not e.startswith(_ADVICE)]
    parts = [*said, f"at ONNX node {nodes[-1]}" if nodes else ""]
    if exc:
        parts.append(f"({exc})")
    return " ".join(p for p in parts if p)


def _record(out_dir: Path, kept: list[str]) -> None:
    """What the files do not say: the inputs kept NHWC, the images onnx2tf checked its
    conversion on."""
    record = {
        "tool": "onnx2tf",
        "outputs": {"tflite": "model_float32.tflite", "tf": "saved_model"},
        "converted": "model.onnx (the source as onnxsim simplified it)",
        "nhwc_inputs_kept": kept,
        "sample_images": f"20 seeded (seed {SAMPLE_SEED}) uniform [0, 1) images, 128x128, in "
        f"place of the {SAMPLE_DATA} onnx2tf downloads",
    }
    (out_dir / "onnx2tf.json").write_text(json.dumps(record, indent=2) + "\n")

"""The one place a model's preprocessing is settled from the user's options and its input.

Why one resolver: `run` and `localize` used to settle it each their own way and drifted apart
(`localize` took the model's size first and silently ignored ``--input-size``; only `run`
checked the channel count). Every command that feeds a user's model file calls
:func:`resolve_spec`, so the same options on the same model give the same spec, or the same
one-line error, whatever the command.
"""

from __future__ import annotations

from typing import Any

from convdiff.core.errors import InputShapeError
from convdiff.core.options import PreprocessOptions
from convdiff.frameworks import framework, layout_of
from convdiff.inputs import preprocess
from convdiff.inputs.preprocess import PreprocessSpec


def check_classifier(description: dict[str, Any], name: str) -> None:
    """Refuse a model convdiff cannot compare as a classifier: more than one input, or an
    output that is not one score vector per image (a [1,3,7,7] feature map once passed as
    "source and target agree")."""
    inputs = description.get("inputs", 1)
    if inputs != 1:
        raise InputShapeError(
            f"{name} takes {inputs} inputs",
            "convdiff compares image classifiers with one image input",
        )
    out = [d for d in list(description.get("output_shape") or [])[1:] if d != 1]
    if len(out) > 1:
        raise InputShapeError(
            f"{name}'s output has shape {description['output_shape']}, not one score vector "
            "per image",
            "convdiff compares image classifiers: give the model whose output is the class scores",
        )


def concrete_shape(shape: tuple[Any, ...], spec: PreprocessSpec) -> tuple[Any, ...]:
    """The model's input shape with what it leaves open (image size, even the whole shape of
    a TorchScript file) filled in from the images' spec: what a converter needs as its
    example input. The batch dimension stays as the model has it."""
    h, w = spec.size
    full = (None, 3, h, w) if spec.layout == "NCHW" else (None, h, w, 3)
    if len(shape) != 4:
        return full
    return tuple(
        d if i == 0 or (isinstance(d, int) and d > 0) else f
        for i, (d, f) in enumerate(zip(shape, full, strict=True))
    )


def resolve_spec(
    fw: str, shape: list[Any], options: PreprocessOptions, *, own_size: bool = False
) -> PreprocessSpec:
    """The preprocessing of a model of framework ``fw`` whose input has ``shape``.

    The layout is ``options.layout``, else read from the shape; the image size is
    ``--input-size``, which must then equal the model's static size, else the static size.
    ``own_size``: the model's static size wins over ``options.input_size`` (a target fed its
    own framework's customary preprocessing takes the images at its own size)."""
    if not shape and options.input_size is not None:  # unknown (TorchScript keeps none)
        h, w = options.input_size
        nchw = (options.layout or framework(fw).layout).upper() == "NCHW"
        shape = [None, 3, h, w] if nchw else [None, h, w, 3]
    if not shape:
        raise InputShapeError(
            "the model's input shape is unknown (a TorchScript file keeps none)",
            "pass --input-size H,W (and --layout nhwc if it takes NHWC images)",
        )
    if len(shape) != 4:
        raise InputShapeError(
            f"the model's input has shape {shape or '(unknown)'}",
            "convdiff compares image classifiers with one 4-D image input (N,H,W,C or N,C,H,W)",
        )
    layout = (options.layout or "").upper() or layout_of(shape, framework(fw).layout)
    h, w, c = (shape[2], shape[3], shape[1]) if layout == "NCHW" else (shape[1], shape[2], shape[3])
    if c not in (3, None, -1):
        raise InputShapeError(
            f"the model takes {c} input channels ({layout} {shape})",
            "convdiff feeds RGB images: give a 3-channel model, or --layout if it was misread",
        )
    static = (h, w) if all(isinstance(v, int) and v > 0 for v in (h, w)) else None
    size = (static or options.input_size) if own_size else (options.input_size or static)
    if size is None:
        raise InputShapeError(
            f"the model's input shape {shape} does not say the image size",
            "pass --input-size H,W",
        )
    if static is not None and tuple(size) != static:
        raise InputShapeError(
            f"the model takes {static[0]}x{static[1]} images but --input-size says "
            f"{size[0]}x{size[1]}",
            f"drop --input-size or pass --input-size {static[0]},{static[1]}",
        )
    return preprocess.from_options(
        None,
        options.preprocess,
        tuple(size),
        options.mean,
        options.std,
        layout,
        options.resize,
    )


__all__ = ["check_classifier", "concrete_shape", "resolve_spec"]

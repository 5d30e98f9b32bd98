"""Which Keras layer classes make which canonical layer kind.

Why here, in ir/: naming a converted Keras model's layers (:func:`convdiff.ir.names.keras_names`)
needs to know which Keras classes can stand behind a TVM layer kind; the Keras repair applier
reads no such table. Pure logic: no framework is imported.
"""

from __future__ import annotations

import re


def match_layer(file_name: str, kind: str, classes: dict[str, str]) -> list[str]:
    """The Keras layers a converted file's op name may stand for (see
    :func:`convdiff.ir.names.keras_names`): the name's ``/`` and ``;`` separated parts that
    are layer names, as they are or without the ``_<n>`` suffix TF's name scopes add, whose
    class fits the op's kind."""
    found: list[str] = []
    for part in re.split(r"[;/]", file_name):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            fits = candidate in classes and _fits(kind, classes[candidate])
            if fits and candidate not in found:
                found.append(candidate)
    return found


CONV = r"(Depthwise|Separable)?Conv\dD"
KIND_CLASSES = {  # raw layer kind -> the Keras classes that make one (full match)
    "conv2d": CONV,
    "dense": "Dense|EinsumDense",
    "batch_norm": "BatchNormalization",
    "pool_max": r"MaxPooling\dD",
    "pool_avg": r"AveragePooling\dD",
    "pool_global_avg": r"GlobalAveragePooling\dD",
    "concat": "Concatenate",
    "pad": r"ZeroPadding\dD",
    "resize": r"UpSampling\dD|Resizing",
    # activations a converter fuses into the layer before them
    "softmax": f"Softmax|Activation|Dense|{CONV}",
    "relu": f"ReLU|Activation|Dense|{CONV}|BatchNormalization|Add",
    "clip": f"ReLU|Activation|Dense|{CONV}|BatchNormalization|Add",
}


def _fits(kind: str, cls: str) -> bool:
    pattern = KIND_CLASSES.get(kind)
    return pattern is None or re.fullmatch(pattern, cls) is not None


__all__ = ["KIND_CLASSES", "match_layer"]

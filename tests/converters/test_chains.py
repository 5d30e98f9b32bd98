"""Chains over the converter registry: named tools, tool releases, transforms (no worker)."""

from __future__ import annotations

import pytest

from convdiff.converters import converter_names, edge, find_chain
from convdiff.core.errors import ConvdiffError, UnsupportedPairError
from convdiff.core.options import ConvertOptions


def _route(chain: list) -> list[tuple[str, str, str]]:
    return [(e.src, e.dst, e.name) for e in chain]


def test_default_chain_uses_default_tools_in_convdiffs_own_environment() -> None:
    chain = find_chain("tf", "keras")
    assert _route(chain) == [("tf", "onnx", "tf2onnx"), ("onnx", "keras", "onnx2keras")]
    assert [e.env for e in chain] == ["", ""]
    assert [e.worker_kind for e in chain] == ["tf", "tf"]


def test_a_tool_version_runs_that_hop_in_its_environment() -> None:
    options = ConvertOptions(tool_versions=("tf2onnx==1.16.1",))
    chain = find_chain("keras", "onnx", options=options)
    assert [(e.name, e.env, e.worker_kind) for e in chain] == [
        ("tf2onnx", "tf2onnx==1.16.1", "tf@tf2onnx==1.16.1")
    ]


def test_a_tool_version_no_hop_uses_is_refused() -> None:
    options = ConvertOptions(tool_versions=("onnx2torch==1.5.14",))
    with pytest.raises(ConvdiffError) as caught:
        find_chain("keras", "onnx", options=options)
    assert str(caught.value) == (
        "--tool-version names onnx2torch, which no hop of this run uses (tools: tf2onnx); "
        "name a tool of the route, or pick the route with --converter"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "tf2onnx",
            "tf2onnx has no default release to build an environment for; "
            "name one: tf2onnx==VERSION",
        ),
        (
            "tf2onnx>=1",
            "cannot read tool requirement 'tf2onnx>=1'; "
            "write it as TOOL==VERSION, e.g. tf2onnx==1.16.1",
        ),
    ],
)
def test_unreadable_tool_versions(spec: str, message: str) -> None:
    with pytest.raises(ConvdiffError) as caught:
        find_chain("keras", "onnx", options=ConvertOptions(tool_versions=(spec,)))
    assert str(caught.value) == message


def test_an_unknown_converter_names_the_known_ones() -> None:
    with pytest.raises(ConvdiffError) as caught:
        find_chain("keras", "onnx", options=ConvertOptions(converters=("tf2onnx2",)))
    assert caught.value.problem == "unknown --converter 'tf2onnx2'"
    assert caught.value.fix is not None and "tf2onnx" in caught.value.fix.split(": ")[1]


def test_a_named_converter_off_the_route_is_refused() -> None:
    with pytest.raises(ConvdiffError) as caught:
        find_chain("keras", "tflite", options=ConvertOptions(converters=("onnx2torch",)))
    # keras -> onnx -> torch, then back through onnx and keras: not a conversion anyone means
    assert str(caught.value) == (
        "--converter onnx2torch is not on any route from keras to tflite that passes each "
        "framework once; it converts onnx -> torch"
    )


def test_a_named_converter_sets_the_route() -> None:
    # keras -> tflite is one hop by default; naming onnx2keras routes through ONNX and Keras
    chain = find_chain("tf", "tflite", options=ConvertOptions(converters=("onnx2keras",)))
    assert _route(chain) == [
        ("tf", "onnx", "tf2onnx"),
        ("onnx", "keras", "onnx2keras"),
        ("keras", "tflite", "tflite-converter"),
    ]


def test_same_framework_without_a_transform_is_refused() -> None:
    with pytest.raises(UnsupportedPairError) as caught:
        find_chain("onnx", "onnx")
    assert str(caught.value) == "source and target are both onnx; choose a different --dst"


def test_every_edge_has_a_name_and_names_are_listed() -> None:
    names = converter_names()
    for name in ("tflite-converter", "tf2onnx", "torch-onnx", "onnx2torch", "onnx2keras"):
        assert name in names
    assert edge("keras", "tflite").name == "tflite-converter"
    assert edge("keras", "tflite").needs_calibration(ConvertOptions(tflite_opt="int8"))
    assert not edge("keras", "tflite").needs_calibration(ConvertOptions(tflite_opt="float16"))

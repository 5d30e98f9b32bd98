"""JUnit XML, the test-report format every CI system reads (GitHub, GitLab, Jenkins, Azure).

Why a module of its own: the format knows nothing of conversions. The check turns its results
into :class:`JUnitCase` values; this module only writes them, with xml.etree (escaping and
well-formedness come from the library, not from string formatting).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

OUTCOMES = ("passed", "failure", "error", "skipped")


@dataclass(frozen=True)
class JUnitCase:
    """One ``<testcase>``. ``outcome`` picks the child element: none, failure, error, skipped."""

    name: str
    classname: str
    seconds: float
    outcome: str = "passed"
    message: str = ""  # the element's message attribute: one line
    kind: str = ""  # the element's type attribute
    details: str = ""  # the element's text: the figures behind the message
    stdout: str = ""  # <system-out>

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}; use one of {OUTCOMES}")


def junit_tree(suite: str, cases: Sequence[JUnitCase], timestamp: str = "") -> ET.ElementTree:
    """``<testsuites>`` holding one ``<testsuite>``, with counts that match its test cases."""
    counts = {
        "tests": len(cases),
        "failures": sum(c.outcome == "failure" for c in cases),
        "errors": sum(c.outcome == "error" for c in cases),
        "skipped": sum(c.outcome == "skipped" for c in cases),
    }
    seconds = f"{sum(c.seconds for c in cases):.3f}"
    root = ET.Element("testsuites", {k: str(v) for k, v in counts.items()}, time=seconds)
    attributes = {"name": suite, **{k: str(v) for k, v in counts.items()}, "time": seconds}
    if timestamp:
        attributes["timestamp"] = timestamp
    node = ET.SubElement(root, "testsuite", attributes)
    for case in cases:
        element = ET.SubElement(
            node, "testcase", classname=case.classname, name=case.name, time=f"{case.seconds:.3f}"
        )
        if case.outcome != "passed":
            child = ET.SubElement(element, case.outcome, message=case.message)
            if case.kind:
                child.set("type", case.kind)
            child.text = case.details or None
        if case.stdout:
            ET.SubElement(element, "system-out").text = case.stdout
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(path: Path, suite: str, cases: Sequence[JUnitCase], timestamp: str = "") -> None:
    """Write the report (UTF-8, with an XML declaration)."""
    junit_tree(suite, cases, timestamp).write(path, encoding="utf-8", xml_declaration=True)


__all__ = ["JUnitCase", "junit_tree", "write_junit"]

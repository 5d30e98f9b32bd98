"""The `convdiff check` config file: TOML read with tomllib, every key validated up front.

Why all this checking before anything runs: a check guards conversions in CI, where a typo
that surfaces after twenty minutes of conversions (or is silently ignored) costs far more than
a strict reader. Every problem of the file is collected and reported at once, one line each,
as ``convdiff.toml:LINE: <problem>; <fix>``, sorted by line. tomllib gives values without
positions, so the lines of tables and keys come from a scan of the file's text
(:func:`locate`); a TOML syntax error stops the reading and is the only problem reported.

What is checked: top-level layout, unknown keys (with the closest valid key), each value's
type and range, required keys, zoo names and the frameworks they are offered in, model files,
data folders, labels and weights files (relative paths are resolved against the config
file's folder), that a converter chain exists, and unique entry names. What can only be known
by loading a model (its input shape, whether an image folder holds readable images) is left
to the run and reported on that entry's line.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from convdiff.commands.run.types import RunConfig
from convdiff.core.errors import ConvdiffError, UnsupportedPairError
from convdiff.core.options import (
    ORT_QUANTS,
    TFLITE_IO,
    TFLITE_OPTS,
    TORCH_EXPORTERS,
    ConvertOptions,
)
from convdiff.frameworks import FRAMEWORKS, detect_framework
from convdiff.frameworks import framework as framework_info
from convdiff.inputs.preprocess import LAYOUTS, PRESETS, RESIZE_MODES

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ROOT = ("",)  # the table id of keys written before any [table] header


@dataclass(frozen=True)
class CheckEntry:
    """One ``[[conversion]]`` with the defaults applied: a run plus what counts as passing."""

    name: str
    run: RunConfig  # out and cache_dir are set by the check, per entry
    max_abs_diff: float | None = None  # None: the output difference is reported, not bounded
    allow_crash: bool = False  # a crash counts as passing (the conversion is known to fail)
    line: int = 0  # where the entry starts in the config file

    @property
    def max_top1_discrepancy(self) -> float:
        """Percent of top-1 labels allowed to differ (the run's own threshold)."""
        return self.run.max_discrepancy


@dataclass(frozen=True)
class CheckConfig:
    path: Path
    entries: tuple[CheckEntry, ...]


@dataclass(frozen=True)
class ConfigIssue:
    """One problem of the config file, at the line a person has to edit."""

    line: int
    problem: str
    fix: str

    def format(self, shown_path: str) -> str:
        return f"{shown_path}:{self.line}: {self.problem}; {self.fix}"


class CheckConfigError(ConvdiffError):
    """The config file is unusable; carries every problem found (exit code 2).

    ``str()`` is the first problem, so a caller that prints one line still says something
    exact; :meth:`lines` gives all of them.
    """

    def __init__(self, shown_path: str, issues: list[ConfigIssue]) -> None:
        self.shown_path = shown_path
        self.issues = sorted(issues, key=lambda issue: issue.line)  # stable: found order
        first = self.issues[0]
        super().__init__(f"{shown_path}:{first.line}: {first.problem}", first.fix)

    def lines(self) -> list[str]:
        return [issue.format(self.shown_path) for issue in self.issues]


# --- where things are written ----------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+|\"[^\"]*\"|'[^']*')\s*\]\]?")
_KEY = re.compile(r"^\s*([A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')\s*(?:\.|=)")


@dataclass(frozen=True)
class Locations:
    """Line numbers of tables (``("defaults",)``, ``("conversion", 0)``) and their keys."""

    tables: dict[tuple[Any, ...], int]
    keys: dict[tuple[tuple[Any, ...], str], int]

    def table(self, table: tuple[Any, ...]) -> int:
        return self.tables.get(table, self.keys.get((_ROOT, str(table[0])), 1))

    def key(self, table: tuple[Any, ...], key: str) -> int:
        return self.keys.get((table, key), self.table(table))


def locate(text: str) -> Locations:
    """Scan the TOML text for table headers and ``key =`` lines (first one of each wins).

    A line scan, not a parser: it is only asked where things tomllib already accepted are
    written, and falls back to the table's (or the top-level key's) line when a key is
    written in a form it does not follow, e.g. inside an inline table.
    """
    tables: dict[tuple[Any, ...], int] = {}
    keys: dict[tuple[tuple[Any, ...], str], int] = {}
    counts: dict[str, int] = {}
    current: tuple[Any, ...] = _ROOT
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            name = header.group(2).strip("\"'")
            if header.group(1) == "[[":
                current = (name, counts.get(name, 0))
                counts[name] = current[1] + 1
            else:
                current = (name,)
            tables.setdefault(current, number)
            continue
        key = _KEY.match(line)
        if key:
            keys.setdefault((current, key.group(1).strip("\"'")), number)
    return Locations(tables, keys)


# --- values ------------------------------------------------------------------------------------


class _Bad(Exception):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem, self.fix = problem, fix


def shown(value: Any) -> str:
    """A value as it is written in TOML (``"int8"``, ``true``, ``[224, 224]``)."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _choice(values: tuple[str, ...], fold: bool = False) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str):
            raise _Bad(f"{key} must be a string, got {shown(value)}", _one_of(key, values))
        picked = value.upper() if fold else value
        if picked not in values:
            raise _Bad(f"{key} = {shown(value)} is not accepted", _one_of(key, values))
        return picked

    return check


def _one_of(key: str, values: tuple[str, ...]) -> str:
    return f"use one of: {', '.join(values)}"


def _text(example: str) -> Callable[[str, Any], Any]:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _Bad(f"{key} must be a non-empty string, got {shown(value)}", example)
        return value

    return check


def _integer(low: int, high: int | None, what: str) -> Callable[[str, Any], Any]:
    return _bounded(low, high, what, integer=True)


def _number(low: float, high: float | None, what: str) -> Callable[[str, Any], Any]:
    return _bounded(low, high, what, integer=False)


def _bounded(low: float, high: float | None, what: str, integer: bool) -> Callable[[str, Any], Any]:
    """A check of an integer (or finite number) within ``low`` .. ``high``."""
    kind = "an integer" if integer else "a finite number"

    def check(key: str, value: Any) -> int | float:
        if not (_is_int(value) if integer else _is_number(value)):
            raise _Bad(f"{key} must be {kind}, got {shown(value)}", f"use {what}")
        if value < low or (high is not None and value > high):
            raise _Bad(f"{key} = {shown(value)} is out of range", f"use {what}")
        return value if integer else float(value)

    return check


def _boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"{key} must be true or false, got {shown(value)}", f"write {key} = true")
    return value


def _frameworks(key: str, value: Any) -> tuple[str, ...]:
    names = tuple(FRAMEWORKS)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(
            f"{key} must be a list of frameworks, got {shown(value)}",
            f'write e.g. {key} = ["onnx"] (frameworks: {", ".join(names)})',
        )
    for item in value:
        if item not in names:
            raise _Bad(f"{key} names an unknown framework {shown(item)}", _one_of(key, names))
    return tuple(value)


def _names(key: str, value: Any) -> tuple[str, ...]:
    """A list of strings (converter names, TOOL==VERSION); find_chain judges the names."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(
            f"{key} must be a list of strings, got {shown(value)}",
            f'write e.g. {key} = ["{_EXAMPLE_NAMES[key]}"]',
        )
    return tuple(value)


_EXAMPLE_NAMES = {"converters": "onnx2tf", "tool_versions": "tf2onnx==1.16.1"}


def _input_size(key: str, value: Any) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2 and all(_is_int(v) for v in value)) or any(
        v <= 0 for v in value
    ):
        raise _Bad(
            f"{key} must be 2 positive integers [H, W], got {shown(value)}",
            f"write e.g. {key} = [224, 224]",
        )
    return (value[0], value[1])


_RGB_EXAMPLE = {"mean": "[0.485, 0.456, 0.406]", "std": "[0.229, 0.224, 0.225]"}


def _rgb(key: str, value: Any) -> tuple[float, float, float]:
    example = f"write e.g. {key} = {_RGB_EXAMPLE[key]} (R, G, B in units of pixel/255)"
    if not (isinstance(value, list) and len(value) == 3 and all(_is_number(v) for v in value)):
        raise _Bad(f"{key} must be 3 numbers [R, G, B], got {shown(value)}", example)
    if key == "mean" and any(abs(v) > 1 for v in value):
        raise _Bad(
            f"mean = {shown(value)} is not in units of pixel/255",
            "divide by 255 (e.g. 123.68 -> 0.485)",
        )
    if key == "std" and any(v <= 0 for v in value):
        raise _Bad(f"std = {shown(value)} must be positive", example)
    return (float(value[0]), float(value[1]), float(value[2]))


_FRAMEWORK_NAMES = tuple(FRAMEWORKS)
_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "name": _text('write e.g. name = "lite0-torch-onnx"'),
    "model": _text('write model = "<zoo name or model file>"'),
    "src": _choice(_FRAMEWORK_NAMES),
    "dst": _choice(_FRAMEWORK_NAMES),
    "via": _frameworks,
    "tflite_opt": _choice(TFLITE_OPTS),
    "opset": _integer(7, 23, "an ONNX opset from 7 to 23"),
    "torch_exporter": _choice(TORCH_EXPORTERS),
    "tflite_io": _choice(TFLITE_IO),
    "ort_quant": _choice(ORT_QUANTS),
    "converters": _names,
    "tool_versions": _names,
    "weights": _text('write weights = "auto", "imagenet", "random" or a weights file'),
    "seed": _integer(0, None, "an integer >= 0"),
    "data": _text('write data = "<image folder>"'),
    "labels": _text('write labels = "<labels file>"'),
    "limit": _integer(1, None, "an integer >= 1"),
    "sample": _integer(1, None, "an integer >= 1"),
    "preprocess": _choice(tuple(PRESETS)),
    "input_size": _input_size,
    "mean": _rgb,
    "std": _rgb,
    "layout": _choice(LAYOUTS, fold=True),
    "resize": _choice(RESIZE_MODES),
    "max_top1_discrepancy": _number(0, 100, "a percentage from 0 to 100"),
    "max_abs_diff": _number(0, None, "a number >= 0"),
    "allow_crash": _boolean,
    "trust_model_code": _boolean,
}
KEYS = tuple(_CHECKS)
PREPROCESSING_KEYS = ("preprocess", "input_size", "mean", "std", "layout", "resize")
_TOP_LEVEL = ("defaults", "conversion")
_CROSS_CHECKED = frozenset({"name", "model", "src", "dst", "via", "weights", "data", "labels"})


def _unknown(key: str, valid: tuple[str, ...], where: str) -> tuple[str, str]:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    fix = f'did you mean "{close[0]}"?' if close else f"valid keys: {', '.join(valid)}"
    return f"unknown key {shown(key)} in {where}", fix


# --- the file ----------------------------------------------------------------------------------


def load_check_config(path: Path, shown_path: str | None = None) -> CheckConfig:
    """Read and validate a check config; raise :class:`CheckConfigError` with every problem.

    ``shown_path`` is how messages name the file (default: the path as given).
    """
    path = Path(path)
    label = shown_path or str(path)
    if not path.is_file():
        problem = "does not exist" if not path.exists() else "is not a file"
        raise ConvdiffError(f"config file {path} {problem}", "check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConvdiffError(f"cannot read config file {path}: {exc}", "check the file") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CheckConfigError(label, [_syntax_issue(str(exc), text)]) from None
    reader = _Reader(path.resolve().parent, locate(text))
    entries = reader.read(document)
    if reader.issues:
        raise CheckConfigError(label, reader.issues)
    return CheckConfig(path=path, entries=tuple(entries))


def _syntax_issue(message: str, text: str) -> ConfigIssue:
    """tomllib's message ends with ``(at line L, column C)`` or ``(at end of document)``."""
    at = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if at:
        problem = message[: at.start()]
        return ConfigIssue(
            int(at.group(1)),
            f"invalid TOML: {problem} (column {at.group(2)})",
            "fix the syntax of this line",
        )
    problem = re.sub(r"\s*\(at end of document\)$", "", message)
    last = max(1, len(text.splitlines()))
    return ConfigIssue(
        last, f"invalid TOML: {problem} at the end of the file", "fix the syntax of the last entry"
    )


class _Reader:
    """Turns the parsed document into entries, collecting problems instead of stopping."""

    def __init__(self, folder: Path, where: Locations) -> None:
        self.folder = folder
        self.where = where
        self.issues: list[ConfigIssue] = []

    def add(self, line: int, problem: str, fix: str) -> None:
        self.issues.append(ConfigIssue(line, problem, fix))

    def read(self, document: dict[str, Any]) -> list[CheckEntry]:
        for key in document:
            if key not in _TOP_LEVEL:
                self.add(self.where.table((key,)), *_unknown(key, _TOP_LEVEL, "the file"))
        defaults_raw = document.get("defaults", {})
        if not isinstance(defaults_raw, dict):
            self.add(
                self.where.key(_ROOT, "defaults"),
                "defaults must be a table",
                "write [defaults] with its keys on the lines below it",
            )
            defaults_raw = {}
        defaults = self._values(defaults_raw, ("defaults",), "[defaults]", entry=False)
        bad_defaults = {k for k in defaults_raw if k in KEYS and k not in defaults}
        raw_entries = document.get("conversion", [])
        if not (isinstance(raw_entries, list) and all(isinstance(e, dict) for e in raw_entries)):
            self.add(
                self.where.key(_ROOT, "conversion"),
                "conversion must be a list of tables",
                "start each entry with its own [[conversion]] line (double brackets)",
            )
            return []
        if not raw_entries:
            self.add(
                1,
                "no [[conversion]] entry",
                'add one: [[conversion]] with model = "efficientnet_lite0", src = "torch", '
                'dst = "onnx"',
            )
            return []
        entries: list[CheckEntry] = []
        names: dict[str, int] = {}
        for index, raw in enumerate(raw_entries):
            table = ("conversion", index)
            values = self._values(raw, table, f"[[conversion]] #{index + 1}", entry=True)
            bad = {k for k in raw if k in KEYS and k not in values} | (bad_defaults - set(raw))
            if bad & _CROSS_CHECKED:
                continue  # those problems are reported; checks across keys would only echo them
            entry = self._entry(index, {**defaults, **values}, set(values))
            if entry is None:
                continue
            line = self.where.key(table, "name") if "name" in values else self.where.table(table)
            if entry.name in names:
                self.add(
                    line,
                    f"duplicate name {shown(entry.name)} (the entry at line "
                    f"{names[entry.name]} has it too)",
                    "give each [[conversion]] its own name = ...",
                )
            names.setdefault(entry.name, line)
            entries.append(entry)
        return entries

    def _values(
        self, raw: dict[str, Any], table: tuple[Any, ...], where: str, entry: bool
    ) -> dict[str, Any]:
        """Each key of one table checked on its own; the good ones, normalized."""
        good: dict[str, Any] = {}
        valid = KEYS if entry else tuple(k for k in KEYS if k != "name")
        for key, value in raw.items():
            line = self.where.key(table, key)
            if key == "name" and not entry:
                self.add(line, "name cannot be a default", "set name in each [[conversion]]")
                continue
            if key not in valid:
                self.add(line, *_unknown(key, valid, where))
                continue
            try:
                good[key] = _CHECKS[key](key, value)
            except _Bad as bad:
                self.add(line, bad.problem, bad.fix)
        return good

    def _entry(self, index: int, values: dict[str, Any], own: set[str]) -> CheckEntry | None:
        """Checks across keys (model, frameworks, chain, files) and the RunConfig."""
        table = ("conversion", index)
        start = self.where.table(table)

        def line(key: str) -> int:
            if key in own:
                return self.where.key(table, key)
            if key in values:
                return self.where.key(("defaults",), key)
            return start

        before = len(self.issues)
        for key, example in (("model", '"<zoo name or model file>"'), ("dst", '"onnx"')):
            if key not in values:
                fix = f"add {key} = {example}"
                if key == "dst":
                    fix += f" (one of: {', '.join(FRAMEWORKS)})"
                self.add(start, f"[[conversion]] #{index + 1} has no {key}", fix)
        if len(self.issues) > before:
            return None
        from convdiff.zoo import is_zoo_name, zoo_listing, zoo_model

        model: str = values["model"]
        src: str | None = values.get("src")
        is_zoo = is_zoo_name(model)
        if is_zoo:
            try:
                offered = zoo_model(model).frameworks
            except ConvdiffError as exc:  # a timm: name timm does not have
                self.add(line("model"), exc.problem, exc.fix or "")
                return None
            if src is None:
                self.add(
                    line("model"),
                    f"zoo model {model} needs src",
                    f"add src = {shown(offered[0])} (offered for: {', '.join(offered)})",
                )
                return None
            if src not in offered:
                self.add(
                    line("src"),
                    f"zoo model {model} is not offered for src = {shown(src)}",
                    f"use one of: {', '.join(offered)}",
                )
                return None
            stem, model_arg = model.replace(":", "-"), model  # timm:x -> timm-x, a folder name
            for key in PREPROCESSING_KEYS:
                if key in own:
                    self.add(
                        line(key),
                        f"{key} applies to model files only",
                        f"remove it: zoo model {model} brings its own preprocessing",
                    )
        else:
            file = self._path(model)
            if not file.exists():
                zoo = zoo_listing()
                self.add(
                    line("model"),
                    f"model = {shown(model)} is neither a zoo model nor an existing file "
                    f"(looked for {file})",
                    f"use a zoo name ({zoo}) or a path relative to the config file",
                )
                return None
            try:
                detected = detect_framework(file)
            except ConvdiffError as exc:
                self.add(
                    line("model"),
                    exc.problem,
                    "use .keras/.h5, a SavedModel folder, .tflite, .onnx or .pt2/.pt",
                )
                return None
            if src is not None and src != detected and {src, detected} != {"keras", "tf"}:
                self.add(
                    line("src"),
                    f"{file.name} is a {framework_info(detected).title} model, not {src}",
                    f"drop src or set src = {shown(detected)}",
                )
                return None
            src = src or detected
            stem, model_arg = file.stem or file.name, str(file)
            if "weights" in own:
                self.add(
                    line("weights"),
                    "weights applies to zoo models only",
                    "remove it: a model file brings its own weights",
                )
        convert = ConvertOptions(
            tflite_opt=values.get("tflite_opt", "none"),
            opset=values.get("opset"),
            torch_exporter=values.get("torch_exporter", "dynamo"),
            tflite_io=values.get("tflite_io", "float"),
            ort_quant=values.get("ort_quant", "none"),
            converters=values.get("converters", ()),
            tool_versions=values.get("tool_versions", ()),
        )
        try:
            from convdiff.converters import find_chain

            find_chain(src, values["dst"], values.get("via", ()), convert)
        except UnsupportedPairError as exc:
            fix = "set a different dst" if exc.problem.startswith("source and") else exc.fix
            self.add(line("dst"), exc.problem, fix or "set a different dst")
        except ConvdiffError as exc:  # a converter or tool release that cannot serve
            keys = ("converters", "tool_versions", "ort_quant")
            key = next((k for k in keys if k in own or k in values), "dst")
            self.add(line(key), exc.problem, exc.fix or "see convdiff run --help")
        weights = values.get("weights", "auto")
        if is_zoo and weights not in ("auto", "imagenet", "random"):
            weights_file = self._path(weights)
            if not weights_file.is_file():
                self.add(
                    line("weights"),
                    f"weights file {weights} does not exist (looked for {weights_file})",
                    "give an existing file (relative to the config file) or auto, imagenet, random",
                )
            weights = str(weights_file)
        data = self._folder(values, "data", line)
        labels = self._labels(values, data, line)
        name = values.get("name", f"{stem}-{src}-{values['dst']}")
        if not _NAME.match(name):
            self.add(
                line("name") if "name" in values else start,
                f"name {shown(name)} cannot name a folder",
                "use letters, digits, '.', '_' and '-' (set name = ... if it is the default)",
            )
        if len(self.issues) > before:
            return None
        run = RunConfig(
            model=model_arg,
            src=src,
            dst=values["dst"],
            via=values.get("via", ()),
            weights=weights,
            seed=values.get("seed", 0),
            data=data,
            labels=labels,
            limit=values.get("limit"),
            sample=values.get("sample"),
            convert=convert,
            preprocess=values.get("preprocess"),
            input_size=values.get("input_size"),
            mean=values.get("mean"),
            std=values.get("std"),
            layout=values.get("layout"),
            resize=values.get("resize"),
            max_discrepancy=values.get("max_top1_discrepancy", 0.0),
            trust_model_code=values.get("trust_model_code", False),
        )
        return CheckEntry(
            name=name,
            run=run,
            max_abs_diff=values.get("max_abs_diff"),
            allow_crash=values.get("allow_crash", False),
            line=start,
        )

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.folder / path

    def _folder(self, values: dict[str, Any], key: str, line: Callable[[str], int]) -> Path | None:
        if key not in values:
            return None
        folder = self._path(values[key])
        if not folder.is_dir():
            self.add(
                line(key),
                f"{key} = {shown(values[key])} is not a folder (looked for {folder})",
                "give an image folder relative to the config file, or remove data to use the "
                "embedded sample set",
            )
        return folder

    def _labels(
        self, values: dict[str, Any], data: Path | None, line: Callable[[str], int]
    ) -> Path | None:
        if "labels" not in values:
            return None
        labels = self._path(values["labels"])
        if data is None:
            self.add(
                line("labels"),
                "labels needs data",
                'labels name the images of an image folder: add data = "<folder>" or remove it',
            )
        elif not labels.is_file():
            self.add(
                line("labels"),
                f"labels = {shown(values['labels'])} is not a file (looked for {labels})",
                "give a labels file relative to the config file",
            )
        return labels


def with_output(entry: CheckEntry, out: Path, cache_dir: Path | None) -> CheckEntry:
    """The entry with its run folder (and the shared cache) filled in."""
    return replace(entry, run=replace(entry.run, out=out, cache_dir=cache_dir))


__all__ = [
    "KEYS",
    "CheckConfig",
    "CheckConfigError",
    "CheckEntry",
    "ConfigIssue",
    "load_check_config",
    "locate",
    "with_output",
]

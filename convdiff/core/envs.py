"""Tool environments: a converter release that cannot share convdiff's pins runs in a Python
environment of its own.

Why: onnx2tf's releases for Python 3.11 pin TensorFlow 2.19 and numpy 1.26, and "did this
converter release break my model?" needs an older or newer tf2onnx than ours. Loosening our
pins would change every other result, so such a tool gets a venv under
``~/.cache/convdiff/envs/`` (``$CONVDIFF_ENVS``), built with pip from a requirement set kept in
the package (``convdiff/data/envs/<tool>.txt``), and a worker of that environment's Python runs
convdiff's own converter code there (:mod:`convdiff.runtime.pool` puts only the ``convdiff``
package on its path, never our site-packages).

An environment is built in a ``.partial`` folder and renamed when pip succeeded and its
manifest (``convdiff-env.json``: tool, version, Python, every installed distribution) is
written, so a half-built environment is never used. Builds of one environment by two processes
are serialized by a lock file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from convdiff.core.errors import ConvdiffError

MANIFEST = "convdiff-env.json"
# Bump when the way an environment is built changes (2: console scripts relocated after the
# rename), so environments built the old way are built again.
BUILD_REVISION = 2
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:==([A-Za-z0-9][A-Za-z0-9.+!_-]*))?$")
_LIST_SCRIPT = (
    "import json, importlib.metadata as m; "
    "print(json.dumps({d.metadata['Name'].lower(): d.version for d in m.distributions()}))"
)


def env_root() -> Path:
    """Where environments live: ``$CONVDIFF_ENVS``, else ``~/.cache/convdiff/envs``."""
    configured = os.environ.get("CONVDIFF_ENVS")
    return Path(configured) if configured else Path.home() / ".cache" / "convdiff" / "envs"


def parse_requirement(spec: str) -> tuple[str, str]:
    """``onnx2tf==1.29.0`` -> (tool, version); ``onnx2tf`` -> (tool, its default version)."""
    match = _REQUIREMENT.match(spec.strip())
    if match is None:
        raise ConvdiffError(
            f"cannot read tool requirement {spec!r}",
            "write it as TOOL==VERSION, e.g. tf2onnx==1.16.1",
        )
    tool, version = match.group(1).lower(), match.group(2)
    template = requirement_set(tool)
    if version is None:
        version = _default_version(tool, template)
    return tool, version


def known_tools() -> list[str]:
    """Tools with a requirement set in the package."""
    folder = resources.files("convdiff") / "data" / "envs"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".txt"))


def requirement_set(tool: str) -> str:
    """The requirement set of ``tool``, a pip requirements file with ``{version}`` in it."""
    path = resources.files("convdiff") / "data" / "envs" / f"{tool}.txt"
    if not path.is_file():
        raise ConvdiffError(
            f"convdiff has no environment recipe for {tool!r}",
            f"tools it can run in their own environment: {', '.join(known_tools())}",
        )
    return path.read_text()


def render_requirements(template: str, version: str) -> str:
    """The pip requirements of one release: ``{version}`` filled in, and a line that ends in
    ``# when < 1.17`` (or ``>=``, ``<=``, ``>``, ``==``) kept only for releases it matches.

    Why: a tool's metadata may allow what its code cannot run with (tf2onnx 1.16 declares
    ``numpy>=1.14`` and calls ``np.cast``, gone in numpy 2); the recipe says so per release.
    """
    from packaging.version import Version

    kept = []
    for line in template.splitlines():
        requirement, _, condition = line.partition("# when ")
        if condition:
            match = re.match(r"\s*(<=|>=|==|<|>)\s*(\S+)", condition)
            if match is None:
                raise ValueError(f"cannot read condition {condition!r} in an environment recipe")
            op, bound = match.groups()
            compare = {
                "<": Version.__lt__,
                "<=": Version.__le__,
                ">": Version.__gt__,
                ">=": Version.__ge__,
                "==": Version.__eq__,
            }[op]
            if not compare(Version(version), Version(bound)):
                continue
            line = requirement.rstrip()
        kept.append(line.replace("{version}", version))
    return "\n".join(kept) + "\n"


def _default_version(tool: str, template: str) -> str:
    for line in template.splitlines():
        if line.startswith("# default:"):
            return line.split(":", 1)[1].strip()
    raise ConvdiffError(
        f"{tool} has no default release to build an environment for",
        f"name one: {tool}==VERSION",
    )


@dataclass(frozen=True)
class ToolEnv:
    """One built environment, as its manifest records it."""

    tool: str
    version: str
    path: Path
    python_version: str
    packages: dict[str, str]
    build_seconds: float

    @property
    def name(self) -> str:
        return f"{self.tool}=={self.version}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def to_dict(self) -> dict[str, object]:
        """What a report records of the environment a hop ran in."""
        return {
            "name": self.name,
            "path": str(self.path),
            "python": self.python_version,
            "tool_version": self.packages.get(self.tool, self.version),
        }


def env_dir(name: str) -> Path:
    tool, version = parse_requirement(name)
    return env_root() / f"{tool}-{version}"


def find_env(name: str) -> ToolEnv | None:
    """The built environment ``name`` (``tool==version``), or None when it is not built."""
    folder = env_dir(name)
    manifest = folder / MANIFEST
    if not manifest.is_file() or not (folder / "bin" / "python").exists():
        return None
    data = json.loads(manifest.read_text())
    tool, version = parse_requirement(name)
    recipe = render_requirements(requirement_set(tool), version)
    if data.get("requirements") != recipe or data.get("build_revision") != BUILD_REVISION:
        return None  # built from another recipe: ensure_env builds it again
    return ToolEnv(
        data["tool"],
        data["version"],
        folder,
        data["python"],
        data["packages"],
        data.get("build_seconds", 0.0),
    )


def installed_versions(name: str) -> dict[str, str]:
    """Distribution versions of environment ``name`` (empty when it is not built)."""
    env = find_env(name)
    return dict(env.packages) if env else {}


def list_envs() -> list[ToolEnv]:
    """Every built environment under :func:`env_root` (half-built ones are not listed)."""
    root = env_root()
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and (folder / MANIFEST).is_file():
            data = json.loads((folder / MANIFEST).read_text())
            env = None
            with contextlib.suppress(ConvdiffError):  # a recipe this convdiff no longer has
                env = find_env(f"{data['tool']}=={data['version']}")
            if env is not None:
                found.append(env)
    return found


Tick = Callable[[float], None] | None


def ensure_env(
    name: str, on_tick: Tick = None, log: Callable[[str], None] | None = None
) -> ToolEnv:
    """The environment ``name``, built first if it is not (minutes: pip installs a framework).

    A build that fails is a :class:`ConvdiffError` naming the tool, the version and pip's
    reason; nothing of it is left behind.
    """
    existing = find_env(name)
    if existing is not None:
        return existing
    tool, version = parse_requirement(name)
    folder = env_dir(name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(folder.name + ".lock")):
        existing = find_env(name)  # built by another process while we waited
        if existing is not None:
            return existing
        if log is not None:
            log(f"building the {tool}=={version} environment in {folder} (first use)")
        return _build(tool, version, folder, on_tick)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(tool: str, version: str, folder: Path, on_tick: Tick) -> ToolEnv:
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    started = time.perf_counter()
    try:
        _run([_base_python(), "-m", "venv", str(partial)], partial.parent / f"{folder.name}.log")
        requirements = partial / "requirements.txt"
        requirements.write_text(render_requirements(requirement_set(tool), version))
        log_path = partial / "pip.log"
        pip = [
            str(partial / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
        ]
        code = _run_ticking([*pip, "-r", str(requirements)], log_path, on_tick, started)
        if code != 0:
            raise ConvdiffError(
                f"cannot build the environment for {tool}=={version}: {_pip_reason(log_path)}",
                f"check that {tool} {version} exists for Python {_python_version()} "
                "and that the package index is reachable; pip's log was "
                f"{folder.parent / (folder.name + '.pip.log')}",
            )
        packages = json.loads(
            subprocess.run(
                [str(partial / "bin" / "python"), "-c", _LIST_SCRIPT],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        manifest = {
            "tool": tool,
            "version": version,
            "python": _python_version(),
            "packages": packages,
            "build_seconds": round(time.perf_counter() - started, 1),
            "requirements": requirements.read_text(),
            "build_revision": BUILD_REVISION,
        }
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        _relocate_scripts(partial, folder)
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    except BaseException:
        log_path = partial / "pip.log"
        if log_path.exists():  # keep pip's log where the message says, drop the rest
            shutil.copyfile(log_path, folder.parent / f"{folder.name}.pip.log")
        shutil.rmtree(partial, ignore_errors=True)
        raise
    env = find_env(f"{tool}=={version}")
    assert env is not None
    return env


def _relocate_scripts(partial: Path, folder: Path) -> None:
    """Point the environment's scripts at the folder it is renamed to.

    pip writes each console script with the absolute path of the interpreter it was
    installed for (``#!.../onnx2tf-1.29.24.partial/bin/python``), and ``activate`` names the
    folder too: after the rename such a script cannot start (onnx2tf runs ``onnxsim`` as a
    command, and skips the simplification when it fails).
    """
    old, new = partial.name.encode(), folder.name.encode()
    for script in (partial / "bin").iterdir():
        if script.is_symlink() or not script.is_file() or script.stat().st_size > 1 << 20:
            continue
        data = script.read_bytes()
        if old in data:
            script.write_bytes(data.replace(old, new))


def _run(command: list[str], log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=True)
    log_path.unlink(missing_ok=True)


def _run_ticking(command: list[str], log_path: Path, on_tick: Tick, started: float) -> int:
    """Run pip, calling ``on_tick`` twice a second so a long build shows it is alive."""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        done = threading.Event()
        try:
            while proc.poll() is None:
                done.wait(0.5)
                if on_tick is not None:
                    on_tick(time.perf_counter() - started)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return proc.returncode


def _pip_reason(log_path: Path) -> str:
    """pip's own one-line reason: its first ERROR line, else the log's last line."""
    try:
        lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines()]
    except OSError:
        return "pip failed"
    errors = [line for line in lines if line.startswith("ERROR:")]
    reason = errors[0] if errors else next((line for line in reversed(lines) if line), "pip failed")
    return reason.removeprefix("ERROR: ")[:300]


def _base_python() -> str:
    """The interpreter convdiff's own venv was made from (a venv of a venv would chain them)."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _python_version() -> str:
    return ".".join(str(v) for v in sys.version_info[:3])


def convdiff_path(env: ToolEnv) -> Path:
    """A folder holding only a link to this ``convdiff`` package: the env worker's PYTHONPATH.

    Our own site-packages must stay off that path (the environment exists because its pins
    differ), and convdiff may be installed anywhere, so the link is refreshed on every use.
    """
    folder = env.path / "convdiff-path"
    folder.mkdir(exist_ok=True)
    link = folder / "convdiff"
    package = Path(__file__).resolve().parents[1]
    if not link.is_symlink() or link.resolve() != package:
        link.unlink(missing_ok=True)
        with contextlib.suppress(FileExistsError):  # another worker made it just now
            link.symlink_to(package, target_is_directory=True)
    return folder


__all__ = [
    "ToolEnv",
    "convdiff_path",
    "ensure_env",
    "env_root",
    "find_env",
    "installed_versions",
    "known_tools",
    "list_envs",
    "parse_requirement",
    "render_requirements",
    "requirement_set",
]

"""The wheels of a device package: the runtime's own, built from its sources, and every dependency's, for the
target's platform tags and Python version, fetched with ``pip download --only-binary :all:`` so that the device
installs with ``pip install --no-index`` and needs no network.

pip's own failure ("No matching distribution found for onnxruntime>=1.17") becomes a :class:`PackageError` that
names the package, the tags and the Python version, and the fix:

>>> print(pip_failure("ERROR: No matching distribution found for onnxruntime>=1.17", ("manylinux2014_aarch64",),
...                   "3.11", "rpi4"))  # doctest: +NORMALIZE_WHITESPACE
no wheel of onnxruntime>=1.17 for Python 3.11 on manylinux2014_aarch64 (target rpi4): pip found none on PyPI; a
device without such a wheel cannot install the runtime offline; list the platform tags the device's pip accepts
(`python3 -m pip debug --verbose` on the device) in the profile's platform_tags, most specific first, or set its
python to a version that package publishes wheels for
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

from edgeml.errors import EdgeMLError

#: The distribution name of the device runtime.
RUNTIME = "edgeml-runtime"
_MISSING = re.compile(r"No matching distribution found for (\S+)")
_NO_VERSION = re.compile(r"Could not find a version that satisfies the requirement (\S+)")
_MANYLINUX = re.compile(r"manylinux_2_(\d+)_(\w+)")
_PYTHON = re.compile(r"Package '([^']+)' requires a different Python")


class PackageError(EdgeMLError):
    """A device package cannot be made as asked (a missing wheel, a target without Python, a busy destination)."""


@dataclass(frozen=True)
class WheelSet:
    """Where the wheels are, and the requirement the device installs (``edgeml-runtime[onnx,mqtt]``)."""

    folder: Path
    requirement: str
    runtime_wheel: Path


def pip_platforms(tags: tuple[str, ...]) -> tuple[str, ...]:
    """The ``--platform`` values for a profile's tags: pip on the device takes a ``manylinux_2_N`` wheel for
    every glibc 2.N and older, but ``pip download --platform`` matches tags exactly, so each ``manylinux_2_N``
    tag stands for 2.N down to 2.17 (and its alias ``manylinux2014``); other tags pass as they are.

    >>> pip_platforms(("manylinux_2_20_aarch64", "manylinux2014_aarch64"))  # doctest: +NORMALIZE_WHITESPACE
    ('manylinux_2_20_aarch64', 'manylinux_2_19_aarch64', 'manylinux_2_18_aarch64', 'manylinux_2_17_aarch64',
     'manylinux2014_aarch64')
    """
    out: list[str] = []
    for tag in tags:
        glibc = _MANYLINUX.fullmatch(tag)
        if glibc and int(glibc.group(1)) >= 17:
            minor, arch = int(glibc.group(1)), glibc.group(2)
            out += [f"manylinux_2_{m}_{arch}" for m in range(minor, 16, -1)] + [f"manylinux2014_{arch}"]
        else:
            out.append(tag)
    return tuple(dict.fromkeys(out))


def runtime_sources() -> Path:
    """The folder holding the runtime's ``pyproject.toml``: the checkout's ``runtime/`` that the installed
    ``edgeml_runtime`` was installed from (in editable mode)."""
    import edgeml_runtime

    folder = Path(edgeml_runtime.__file__).resolve().parent.parent
    if not (folder / "pyproject.toml").is_file():
        raise PackageError(
            f"{folder}: edgeml_runtime is installed without its sources (no pyproject.toml beside it), so its wheel "
            "cannot be built here; install it from a checkout (`pip install -e ./runtime`), or pass --wheels-from "
            "DIR with a folder holding an edgeml_runtime-*.whl and its dependencies' wheels")
    return folder


def build_runtime_wheel(dest: Path) -> Path:
    """Build the runtime's wheel from a copy of :func:`runtime_sources` (so the checkout gets no ``build/``
    folder) into ``dest``; return its path."""
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("edgeml_runtime-*.whl"))
    with tempfile.TemporaryDirectory(prefix="edgeml-runtime-src-") as scratch:
        source = Path(scratch) / "runtime"
        shutil.copytree(runtime_sources(), source,
                        ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "*.pyc"))
        _pip(["wheel", "--no-deps", "--quiet", "--wheel-dir", str(dest), str(source)], "building the runtime wheel")
    made = sorted(set(dest.glob("edgeml_runtime-*.whl")) - before) or sorted(dest.glob("edgeml_runtime-*.whl"))
    return made[-1]


def requires_python(wheel: Path) -> str:
    """The ``Requires-Python`` of a wheel's metadata (``""`` when it says none)."""
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(z.read(name).decode("utf-8"))
    return meta.get("Requires-Python", "") or ""


def check_python(wheel: Path, python: str, target: str) -> None:
    """Refuse a target whose Python the runtime does not support, before any download."""
    from packaging.specifiers import SpecifierSet

    spec = requires_python(wheel)
    if spec and not SpecifierSet(spec).contains(python + ".0"):
        raise PackageError(
            f"target {target}: python = {python!r}, but {RUNTIME} requires Python {spec} ({wheel.name}); install a "
            "supported Python on the device and set it in a profile that extends this one (python = \"3.11\")")


def download(requirement: str, dest: Path, tags: tuple[str, ...], python: str, target: str,
             wheels_from: Path | None = None) -> None:
    """``pip download`` every wheel ``requirement`` needs for ``tags`` and ``python`` into ``dest``."""
    args = ["download", "--quiet", "--only-binary", ":all:", "--dest", str(dest), "--python-version", python,
            "--implementation", "cp"]
    nodot = python.replace(".", "")
    for abi in (f"cp{nodot}", "abi3", "none"):
        args += ["--abi", abi]
    for tag in (*pip_platforms(tags), "any"):
        args += ["--platform", tag]
    if wheels_from is not None:
        args += ["--no-index", "--find-links", str(wheels_from)]
    try:
        _pip([*args, requirement], "downloading the dependency wheels")
    except _PipFailed as exc:
        raise PackageError(pip_failure(exc.output, tags, python, target, wheels_from)) from None


def pip_failure(output: str, tags: tuple[str, ...], python: str, target: str, wheels_from: Path | None = None) -> str:
    """pip's failure to find a wheel, as a message naming the package, the tags, the Python and the fix."""
    where = f"in {wheels_from}" if wheels_from else "on PyPI"
    for pattern in (_MISSING, _NO_VERSION):
        found = pattern.search(output)
        if found:
            if wheels_from:
                fix = (f"put such a wheel in {wheels_from}, or leave out --wheels-from to download the wheels from "
                       "PyPI")
            else:
                fix = ("a device without such a wheel cannot install the runtime offline; list the platform tags the "
                       "device's pip accepts (`python3 -m pip debug --verbose` on the device) in the profile's "
                       "platform_tags, most specific first, or set its python to a version that package publishes "
                       "wheels for")
            return (f"no wheel of {found.group(1)} for Python {python} on {', '.join(tags)} (target {target}): pip "
                    f"found none {where}; {fix}")
    found = _PYTHON.search(output)
    if found:
        return (f"{found.group(1)} does not support Python {python} (target {target}); set the profile's python to "
                "the version the device runs, one the package supports")
    tail = "\n".join(output.strip().splitlines()[-8:])
    return f"pip could not download the wheels for target {target} (Python {python}, {', '.join(tags)}):\n{tail}"


class _PipFailed(Exception):
    def __init__(self, output: str):
        super().__init__(output)
        self.output = output


def _pip(args: list[str], doing: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_REQUIRE_VIRTUALENV",)}
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        if args[0] == "download":
            raise _PipFailed(done.stdout + done.stderr)
        raise PackageError(f"{doing} failed (pip {' '.join(args[:3])} ...):\n{done.stderr.strip()[-2000:]}")


def fetch_wheels(dest: Path, extras: tuple[str, ...], tags: tuple[str, ...], python: str, target: str,
                 wheels_from: Path | None = None) -> WheelSet:
    """The runtime wheel (from ``wheels_from`` when it holds one, else built) and its dependencies, in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    given = sorted(wheels_from.glob("edgeml_runtime-*.whl")) if wheels_from else []
    if given:
        wheel = dest / given[-1].name
        wheel.write_bytes(given[-1].read_bytes())
    else:
        wheel = build_runtime_wheel(dest)
    check_python(wheel, python, target)
    requirement = f"{RUNTIME}[{','.join(extras)}]"
    download(f"{requirement} @ {wheel.resolve().as_uri()}", dest, tags, python, target, wheels_from)
    return WheelSet(dest, requirement, wheel)

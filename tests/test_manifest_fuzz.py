"""The manifest loader over thousands of mutated manifests: it reads them or refuses them with a BundleError whose
message is printable text naming ``manifest.json``; never another exception, never a traceback (issue 10)."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeml_runtime.bundle import read_manifest
from edgeml_runtime.errors import BundleError

#: Generated cases (about 10 ms each: some 30 s on a quiet machine).
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", 3000))
ODD_TEXT = ["", "\ud800", "\udfff", "\x00", "../../etc/shadow", "/etc/shadow", "manifest.json", ".hidden",
            "\u202e\u0301", "\U0001f600", "x" * 5000, "1e400", "NaN", "\n\r\t"]

text = st.text(st.characters(exclude_categories=()), max_size=12) | st.sampled_from(ODD_TEXT)
scalars = (st.none() | st.booleans() | st.integers(-(10 ** 30), 10 ** 30) | st.sampled_from([2 ** 63, -(2 ** 63) - 1])
           | st.floats(allow_nan=True, allow_infinity=True) | text)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
                      max_leaves=6)


def _paths(value, prefix=()) -> list[tuple]:
    """Every place in a JSON value, as keys and indices from the top."""
    found = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):  # the first few items of a long list stand for the rest
            found += _paths(v, (*prefix, i))
    return found


def _mutate(doc: dict, path: tuple, op: str, value, deep: list[int]) -> dict:
    if not path:
        return doc
    *head, last = path
    parent = doc
    for k in head:
        parent = parent[k]
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif op == "unknown" and isinstance(parent, dict):
        parent[value if isinstance(value, str) else "surprise"] = value
    elif op == "wrap":
        parent[last] = [parent[last]] if isinstance(value, bool) else {"v": parent[last]}
    elif op == "stringify":
        parent[last] = json.dumps(parent[last])
    elif op == "deep":
        parent[last] = f"__deep_{len(deep)}__"
        deep.append(value)
    elif op == "huge":
        parent[last] = list(range(20_000)) if isinstance(value, bool) else 10 ** 400
    return doc


mutation = st.tuples(st.integers(0, 10 ** 9), st.sampled_from(
    ["replace", "replace", "replace", "delete", "delete", "unknown", "wrap", "stringify", "deep", "huge"]), values)


class _Base:
    """The demo manifest and its places (an object, so that a failing case's report does not print them)."""

    def __init__(self, text: str):
        self.text, self.paths = text, _paths(json.loads(text))

    def __repr__(self) -> str:
        return "<the demo bundle's manifest>"


@pytest.fixture(scope="module")
def base(demo_bundle) -> _Base:
    return _Base((demo_bundle / "manifest.json").read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "bundle"


_SEEN = {"cases": 0, "refused": 0, "read": 0}


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(mutations=st.lists(mutation, min_size=1, max_size=3), ascii_only=st.booleans(),
       depth=st.sampled_from([20, 900, 5000, 100_000]), cut=st.none() | st.integers(0, 10 ** 6))
def test_the_loader_reads_or_refuses_every_mutated_manifest(base, folder, mutations, ascii_only, depth, cut):
    paths = base.paths
    doc, deep = json.loads(base.text), []  # a fresh copy, faster than copy.deepcopy
    for index, op, value in mutations:
        path = paths[index % len(paths)]
        try:
            doc = _mutate(doc, path, op, value if op != "deep" else depth, deep)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed that place
    raw = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    for i, n in enumerate(deep):
        raw = raw.replace(f'"__deep_{i}__"'.encode(), b"[" * n + b"]" * n)
    if cut is not None and cut % 7 == 0:
        raw = raw[:cut % (len(raw) + 1)]  # now and then, a manifest cut short
    folder.mkdir(exist_ok=True)
    (folder / "manifest.json").write_bytes(raw)
    _SEEN["cases"] += 1
    try:
        manifest = read_manifest(folder)
    except BundleError as exc:
        message = str(exc)
        message.encode("utf-8")  # printable on any terminal: no lone surrogate leaks into it
        assert "manifest.json" in message and len(message) < 2000, message[:300]
        _SEEN["refused"] += 1
        return
    assert manifest.identity and manifest.to_dict()  # what reads also writes back and hashes
    _SEEN["read"] += 1


def test_the_fuzzing_ran_its_cases():
    """Runs after the fuzz test (file order): its thousands of cases ran, and most were refused (the mutations
    bite), some read (they do not all break the manifest the same way)."""
    if not _SEEN["cases"]:
        pytest.skip("the fuzz test did not run")
    assert _SEEN["cases"] >= EXAMPLES * 0.9 and _SEEN["refused"] > _SEEN["cases"] / 2 and _SEEN["read"] > 0

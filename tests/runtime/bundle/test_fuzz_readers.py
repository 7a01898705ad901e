"""Fuzzing the bundle readers with hypothesis: whatever the manifest or the prototype store holds, only the package's
own errors (ClipFsarError) come out, never a raw exception. 1,000 generated inputs per reader here; 10,000 under
``-m slow``. hypothesis (a well-kept property-based testing library) generates and shrinks the inputs."""
import json
import shutil
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clipfsar.runtime.base.errors import ClipFsarError
from clipfsar.runtime.bundle.reader import Bundle, Manifest, PrototypeStore

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 40, 2 ** 40) | st.floats(allow_nan=True)
                    | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
FAST = settings(max_examples=1000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(FAST, max_examples=10000)


def _paths(obj, prefix=()):
    """Every (path) into a JSON value: dict keys and list indices."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutated(valid, data):
    """A copy of ``valid`` with one to three subtrees replaced by random JSON, or deleted."""
    doc = json.loads(json.dumps(valid))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON)
    return doc


@pytest.fixture(scope="module")
def fuzz_bundle(tmp_path_factory, tiny_bundle):
    dst = tmp_path_factory.mktemp("fuzz") / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _check_manifest(root, valid, data):
    doc = _mutated(valid, data) if data.draw(st.integers(0, 9)) else data.draw(JSON)
    try:
        Manifest.from_json(doc, "fuzz") if isinstance(doc, dict) else None
    except ClipFsarError:
        pass
    (root / "manifest.json").write_text(json.dumps(doc))
    try:
        b = Bundle.open(root, check_hashes=False)
    except ClipFsarError:
        return
    b.graph_path("image_encoder")  # what opened is usable
    assert b.store.prototypes.shape[1:] == (b.manifest.model.frames, b.manifest.model.embed_dim)


def _fuzz_manifest(fuzz_bundle, data):
    valid = json.loads((fuzz_bundle / "manifest.valid.json").read_text())
    _check_manifest(fuzz_bundle, valid, data)


@pytest.fixture(scope="module")
def manifest_bundle(fuzz_bundle):
    (fuzz_bundle / "manifest.valid.json").write_text((fuzz_bundle / "manifest.json").read_text())
    return fuzz_bundle


@FAST
@given(data=st.data())
def test_fuzz_manifest(manifest_bundle, data):
    _fuzz_manifest(manifest_bundle, data)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_fuzz_manifest_long(manifest_bundle, data):
    _fuzz_manifest(manifest_bundle, data)


def _store_bytes(valid: bytes, data) -> bytes:
    """A valid safetensors file with its JSON header mutated, bytes flipped, or cut short; or random bytes."""
    kind = data.draw(st.sampled_from(["header", "flip", "truncate", "random", "length"]))
    if kind == "random":
        return data.draw(st.binary(max_size=256))
    if kind == "truncate":
        return valid[:data.draw(st.integers(0, len(valid) - 1))]
    if kind == "flip":
        buf = bytearray(valid)
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(buf) - 1))
            buf[i] = data.draw(st.integers(0, 255))
        return bytes(buf)
    n = struct.unpack("<Q", valid[:8])[0]
    header, body = json.loads(valid[8:8 + n]), valid[8 + n:]
    if kind == "length":
        return struct.pack("<Q", data.draw(st.integers(0, 2 ** 64 - 1))) + valid[8:]
    new = json.dumps(_mutated(header, data)).encode()
    return struct.pack("<Q", len(new)) + new + body


def _fuzz_store(path, valid, data):
    path.write_bytes(_store_bytes(valid, data))
    try:
        store = PrototypeStore.load(path)
    except ClipFsarError:
        return
    assert store.prototypes.dtype == np.float32 and np.isfinite(store.prototypes).all()
    assert store.text_features.shape == (len(store.class_names), store.prototypes.shape[2])


@pytest.fixture(scope="module")
def valid_store(tiny_bundle):
    return (tiny_bundle / "prototypes.safetensors").read_bytes()


@FAST
@given(data=st.data())
def test_fuzz_prototype_store(tmp_path, valid_store, data):
    _fuzz_store(tmp_path / "p.safetensors", valid_store, data)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_fuzz_prototype_store_long(tmp_path, valid_store, data):
    _fuzz_store(tmp_path / "p.safetensors", valid_store, data)

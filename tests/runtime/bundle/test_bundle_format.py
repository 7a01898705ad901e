import json
import shutil

import numpy as np
import pytest

from clipfsar.runtime.base.errors import BundleError
from clipfsar.runtime.bundle.reader import SCHEMA_VERSION, Bundle, PrototypeStore


@pytest.fixture
def bundle_copy(tmp_path, tiny_bundle):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _edit_manifest(root, fn):
    m = json.loads((root / "manifest.json").read_text())
    fn(m)
    (root / "manifest.json").write_text(json.dumps(m))


def test_opens_and_round_trips_store(bundle_copy):
    b = Bundle.open(bundle_copy)
    assert b.manifest.schema_version == SCHEMA_VERSION
    store = PrototypeStore.load(bundle_copy / "prototypes.safetensors")
    assert store.class_names == b.store.class_names
    np.testing.assert_array_equal(store.prototypes, b.store.prototypes)


def test_missing_file(bundle_copy):
    (bundle_copy / "query_head.onnx").unlink()
    with pytest.raises(BundleError, match="graph 'query_head' file query_head.onnx is missing"):
        Bundle.open(bundle_copy)


def test_wrong_hash(bundle_copy):
    p = bundle_copy / "support_head.onnx"
    p.write_bytes(p.read_bytes() + b"\0")
    with pytest.raises(BundleError, match="support_head.onnx does not match its sha256"):
        Bundle.open(bundle_copy)


def test_newer_schema(bundle_copy):
    _edit_manifest(bundle_copy, lambda m: m.update(schema_version=SCHEMA_VERSION + 1))
    with pytest.raises(BundleError, match="newer than this runtime reads"):
        Bundle.open(bundle_copy)


@pytest.mark.parametrize("path", ["../outside.onnx", "/etc/passwd"])
def test_path_outside_bundle(bundle_copy, path):
    _edit_manifest(bundle_copy, lambda m: m["graphs"]["image_encoder"].update(file=path))
    with pytest.raises(BundleError, match="outside the bundle|must be relative"):
        Bundle.open(bundle_copy)


def test_missing_manifest_and_folder(tmp_path, bundle_copy):
    with pytest.raises(BundleError, match="not found"):
        Bundle.open(tmp_path / "nope")
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(bundle_copy)


def test_store_validation(tmp_path):
    p = np.zeros((2, 8, 4), np.float32)
    t = np.zeros((2, 4), np.float32)
    with pytest.raises(BundleError, match="duplicate"):
        PrototypeStore(("a", "a"), p, t, np.ones(2, np.int32))
    with pytest.raises(BundleError, match="empty"):
        PrototypeStore(("a", " "), p, t, np.ones(2, np.int32))
    s = PrototypeStore(("a", "b"), p, t, np.ones(2, np.int32))
    s.save(tmp_path / "s.safetensors")
    assert PrototypeStore.load(tmp_path / "s.safetensors").class_names == ("a", "b")
    (tmp_path / "bad.safetensors").write_bytes(b"xx")
    with pytest.raises(BundleError, match="unreadable"):
        PrototypeStore.load(tmp_path / "bad.safetensors")

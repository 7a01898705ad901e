"""The TensorRT engine cache's pure parts (runtime/engines/trt_cache.py, trt_profile.py): profiles, the cache key,
rebuild decisions (no TensorRT needed)."""
import hashlib
import json

import pytest

from clipfsar.runtime.base.errors import ClipFsarError, ConfigError
from clipfsar.runtime.engines.trt_cache import (
    KEY_FIELDS,
    BuildSettings,
    DeviceInfo,
    engine_key,
    key_mismatch,
    lookup,
    store,
    timing_cache_path,
)
from clipfsar.runtime.engines.trt_profile import (
    ProfileOptions,
    batch_slices,
    load_profile_options,
    profile_shapes,
    save_profile_options,
    shape_problem,
)

# the I/O contract export/graphs.py writes into every manifest (T=8, D=32, context 16 here)
INPUTS = {
    "image_encoder": [{"name": "images", "shape": ["batch", 3, 64, 64]}],
    "text_encoder": [{"name": "tokens", "shape": ["classes", 16]}],
    "support_head": [{"name": "support", "shape": ["classes", "shots", 8, 32]},
                     {"name": "text", "shape": ["classes", 32]}],
    "query_head": [{"name": "query", "shape": ["batch", 8, 32]}, {"name": "prototypes", "shape": ["classes", 8, 32]},
                   {"name": "text", "shape": ["classes", 32]}],
}
DEVICE = DeviceInfo("NVIDIA H200", "9.0", "10.9.0.34", 132, 143771)
SHA = hashlib.sha256(b"graph").hexdigest()


def key(device=DEVICE, sha=SHA, precision="fp16", options=None, graph="query_head", builder=None, external=""):
    return engine_key(device, sha, precision, profile_shapes(INPUTS[graph], options or ProfileOptions()), builder,
                      external)


def test_profile_covers_every_dynamic_axis_of_every_graph():
    opts = ProfileOptions(max_batch=16, max_classes=64, max_shots=5)
    shapes = profile_shapes(INPUTS["support_head"], opts)
    assert shapes["support"] == ((1, 1, 8, 32), (5, 1, 8, 32), (64, 5, 8, 32))
    assert shapes["text"] == ((1, 32), (5, 32), (64, 32))
    q = profile_shapes(INPUTS["query_head"], opts)
    assert q["query"] == ((1, 8, 32), (1, 8, 32), (16, 8, 32)) and q["prototypes"][2] == (64, 8, 32)
    assert profile_shapes(INPUTS["image_encoder"], ProfileOptions(max_batch=4, opt_batch=4))["images"] == \
        ((1, 3, 64, 64), (4, 3, 64, 64), (4, 3, 64, 64))


def test_profile_of_a_real_manifest(tiny_bundle):
    from clipfsar.runtime.bundle.reader import Bundle
    b = Bundle.open(tiny_bundle)
    for spec in b.manifest.graphs.values():
        shapes = profile_shapes(spec.inputs, ProfileOptions())
        assert set(shapes) == {t.name for t in spec.inputs}
        for t in spec.inputs:
            lo, opt, hi = shapes[t.name]
            for d, a, o, c in zip(t.shape, lo, opt, hi):
                assert (a, o, c) == ((d, d, d) if isinstance(d, int) else ProfileOptions().range(d))


def test_profile_rejects_unknown_axes_and_bad_sizes():
    with pytest.raises(ConfigError, match="'frames'"):
        profile_shapes([{"name": "x", "shape": ["frames", 3]}], ProfileOptions())
    with pytest.raises(ConfigError, match="input 'x' axis 1"):
        profile_shapes([{"name": "x", "shape": ["batch", 0]}], ProfileOptions())


@pytest.mark.parametrize("kwargs, message", [
    ({"max_batch": 0}, "--max-batch must be an integer >= 1"),
    ({"max_classes": -3}, "--max-classes"),
    ({"max_shots": 2.5}, "--max-shots"),
    ({"max_batch": True}, "--max-batch"),
    ({"opt_batch": 17}, r"--opt-batch must be between 1 and --max-batch \(16\)"),
    ({"opt_classes": 0}, "--opt-classes"),
    ({"max_shots": 2, "opt_shots": 3}, "--opt-shots"),
])
def test_profile_options_validate(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ProfileOptions(**kwargs)


def test_profile_options_default_opt_is_capped_at_max():
    o = ProfileOptions(max_classes=3)
    assert o.range("classes") == (1, 3, 3) and o.range("batch") == (1, 1, 16) and o.range("shots") == (1, 1, 8)


def test_engine_key_is_a_pure_function_of_every_field():
    base = key()
    assert key().digest == base.digest and len(base.digest) == 64
    variants = {
        "gpu_name": key(device=DeviceInfo("Orin (nvgpu)", "9.0", "10.9.0.34", 132, 143771)),
        "compute_capability": key(device=DeviceInfo("NVIDIA H200", "8.7", "10.9.0.34", 132, 143771)),
        # every Orin module is "Orin" 8.7: the SM count and memory tell an AGX Orin from an Orin Nano
        "sm_count": key(device=DeviceInfo("NVIDIA H200", "9.0", "10.9.0.34", 8, 143771)),
        "memory_mb": key(device=DeviceInfo("NVIDIA H200", "9.0", "10.9.0.34", 132, 7620)),
        "tensorrt_version": key(device=DeviceInfo("NVIDIA H200", "9.0", "11.0.0", 132, 143771)),
        "graph_sha256": key(sha=hashlib.sha256(b"other graph").hexdigest()),
        # a graph over 2 GB: the .onnx holds references only, its weights are in external files
        "external_data": key(external=hashlib.sha256(b"other weights").hexdigest()),
        "precision": key(precision="int8"),
        "profile": key(options=ProfileOptions(max_batch=32)),
        "builder": key(builder=BuildSettings(workspace_mb=1024)),
    }
    assert set(variants) == set(KEY_FIELDS)  # every field of the key is shown to matter
    assert key(builder=BuildSettings(tf32=True)).digest != base.digest  # TF32 on would be another engine
    assert base.fields()["builder"] == {"tf32": False, "strongly_typed": True, "workspace_mb": None}
    # the integrated flag is not a key field (the SM count and memory already tell the modules apart)
    assert key(device=DeviceInfo("NVIDIA H200", "9.0", "10.9.0.34", 132, 143771, True)).digest == base.digest
    for field, other in variants.items():
        assert other.digest != base.digest, field
        diff = [f for f in base.fields() if base.fields()[f] != other.fields()[f]]
        assert diff == [field]
        assert other.stem("query_head") != base.stem("query_head")
    assert base.stem("query_head").startswith("query_head.fp16.")
    # the profile of each input counts, not only the first
    assert key(options=ProfileOptions(max_classes=65)).digest != base.digest


def test_engine_key_rejects_bad_fields():
    shapes = profile_shapes(INPUTS["image_encoder"], ProfileOptions())
    with pytest.raises(ClipFsarError, match="sha256"):
        engine_key(DEVICE, "abc", "fp32", shapes)
    with pytest.raises(ClipFsarError, match="precision 'bf16'"):
        engine_key(DEVICE, SHA, "bf16", shapes)
    with pytest.raises(ClipFsarError, match="device"):
        engine_key(DeviceInfo("", "9.0", "10.9"), SHA, "fp32", shapes)
    with pytest.raises(ClipFsarError, match="profile"):
        engine_key(DEVICE, SHA, "fp32", {})


def test_key_mismatch_names_each_difference():
    a = key().fields()
    b = key(device=DeviceInfo("Orin", "8.7", "10.3.0"), precision="fp32").fields()
    why = " | ".join(key_mismatch(b, a))
    assert "GPU 'Orin' (here: 'NVIDIA H200')" in why and "compute capability '8.7'" in why
    assert "TensorRT '10.3.0' (here: '10.9.0.34')" in why and "precision 'fp32'" in why
    assert key_mismatch(a, a) == []
    assert "another graph" in key_mismatch(key(sha=hashlib.sha256(b"x").hexdigest()).fields(), a)[0]
    assert "profile" in key_mismatch(key(options=ProfileOptions(max_batch=2)).fields(), a)[0]
    assert key_mismatch({}, a)[0] == "the record has no GPU"


def test_lookup_store_and_every_rebuild_reason(tmp_path):
    k = key()
    decision, blob = lookup(tmp_path, "query_head", k)
    assert decision.action == "build" and "no cached fp16 engine for query_head" in decision.reason and blob is None
    path = store(tmp_path, "query_head", k, b"PLAN-BYTES")
    assert path.name == f"{k.stem('query_head')}.engine" and path.read_bytes() == b"PLAN-BYTES"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    decision, blob = lookup(tmp_path, "query_head", k)
    assert decision.action == "load" and blob == b"PLAN-BYTES"

    # the same graph on another GPU / TensorRT: never loaded, and the reason says what differs
    for dev, words in ((DeviceInfo("Orin", "8.7", "10.9.0.34"), "GPU 'NVIDIA H200' (here: 'Orin')"),
                       (DeviceInfo("NVIDIA H200", "9.0", "11.0.1"), "TensorRT '10.9.0.34' (here: '11.0.1')")):
        decision, blob = lookup(tmp_path, "query_head", key(device=dev))
        assert decision.action == "build" and blob is None and words in decision.reason

    # tampered bytes: rebuilt
    path.write_bytes(b"PLAN-BYTES, changed")
    decision, blob = lookup(tmp_path, "query_head", k)
    assert decision.action == "build" and "does not match its recorded sha256" in decision.reason and blob is None

    # engine file gone, record still there
    path.unlink()
    decision, _ = lookup(tmp_path, "query_head", k)
    assert decision.action == "build" and "missing" in decision.reason

    # a record whose key was edited to claim this stem
    store(tmp_path, "query_head", k, b"PLAN")
    rec_path = tmp_path / f"{k.stem('query_head')}.json"
    rec = json.loads(rec_path.read_text())
    rec["key"]["tensorrt_version"] = "8.6.1"
    rec_path.write_text(json.dumps(rec))
    decision, _ = lookup(tmp_path, "query_head", k)
    assert decision.action == "build" and "TensorRT '8.6.1'" in decision.reason

    # an unreadable record
    rec_path.write_text("{not json")
    decision, _ = lookup(tmp_path, "query_head", k)
    assert decision.action == "build" and "unreadable" in decision.reason


def test_engines_of_several_devices_coexist(tmp_path):
    a, b = key(), key(device=DeviceInfo("Orin", "8.7", "10.3.0"))
    store(tmp_path, "query_head", a, b"A")
    store(tmp_path, "query_head", b, b"B")
    assert lookup(tmp_path, "query_head", a)[1] == b"A" and lookup(tmp_path, "query_head", b)[1] == b"B"


def test_shape_problem_and_batch_slices():
    prof = profile_shapes(INPUTS["query_head"], ProfileOptions(max_batch=4, max_classes=10))["prototypes"]
    assert shape_problem("prototypes", (5, 8, 32), prof) is None
    assert "axis 0: 11 not in [1, 10]" in shape_problem("prototypes", (11, 8, 32), prof)
    assert "axis 2: 31" in shape_problem("prototypes", (5, 8, 31), prof)
    assert "has 2 axes" in shape_problem("prototypes", (5, 8), prof)
    assert batch_slices(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert batch_slices(3, 4) == [slice(0, 3)]
    with pytest.raises(ValueError):
        batch_slices(0, 4)


def test_profile_options_saved_for_the_runtime(tmp_path):
    assert load_profile_options(tmp_path) == ProfileOptions() == load_profile_options(None)
    o = ProfileOptions(max_batch=32, max_classes=100, opt_classes=20)
    save_profile_options(tmp_path / "engines", o)
    assert load_profile_options(tmp_path / "engines") == o
    (tmp_path / "engines" / "profile.json").write_text('{"max_batch": 0}')
    with pytest.raises(ConfigError, match="--max-batch"):
        load_profile_options(tmp_path / "engines")
    (tmp_path / "engines" / "profile.json").write_text('{"max_frames": 3}')
    with pytest.raises(ConfigError, match="unknown profile options"):
        load_profile_options(tmp_path / "engines")
    (tmp_path / "engines" / "profile.json").write_text("[")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_profile_options(tmp_path / "engines")


def test_timing_cache_is_per_device(tmp_path):
    assert timing_cache_path(tmp_path, DEVICE) == timing_cache_path(tmp_path, DeviceInfo(*DEVICE.__dict__.values()))
    assert timing_cache_path(tmp_path, DEVICE) != timing_cache_path(tmp_path, DeviceInfo("Orin", "8.7", "10.3"))


def test_cuda_check_unpacks_cuda_python_results():
    import enum

    from clipfsar.runtime.engines.trt_engine import cuda_check

    class cudaError_t(enum.IntEnum):  # the shape of cuda-python's error enum
        cudaSuccess = 0
        cudaErrorNoDevice = 100

    assert cuda_check((cudaError_t.cudaSuccess, 3)) == 3
    assert cuda_check((cudaError_t.cudaSuccess, 1, 2)) == (1, 2)
    assert cuda_check((cudaError_t.cudaSuccess,)) is None
    with pytest.raises(ClipFsarError, match=r"cudaErrorNoDevice \(100\)"):
        cuda_check((cudaError_t.cudaErrorNoDevice, 0))


def test_a_record_of_the_previous_key_format_is_rebuilt(tmp_path):
    """Records written before the key held the SM count, memory and builder settings are never loaded."""
    k = key()
    store(tmp_path, "query_head", k, b"PLAN")
    rec_path = tmp_path / f"{k.stem('query_head')}.json"
    rec = json.loads(rec_path.read_text())
    for f in ("sm_count", "memory_mb", "builder", "external_data"):
        del rec["key"][f]
    rec_path.write_text(json.dumps(rec))
    decision, blob = lookup(tmp_path, "query_head", k)
    assert decision.action == "build" and blob is None
    assert "the record has no SM count" in decision.reason and "builder settings" in decision.reason

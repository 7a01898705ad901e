"""onnxruntime's TensorRT EP options (runtime/engines/trt_ep.py): no fp16/int8 flags for variants that carry their
precision, the native engines' optimisation profile, caches only in a cache folder (never the working directory)."""
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.engines.backends import _provider_list
from clipfsar.runtime.engines.trt_ep import profile_option, tensorrt_ep_options
from clipfsar.runtime.engines.trt_profile import ProfileOptions, profile_shapes, save_profile_options


def test_variants_carry_their_precision_no_builder_flags(tmp_path):
    for precision in ("fp32", "fp16", "int8"):
        opts = tensorrt_ep_options(tmp_path, precision)
        assert opts["trt_fp16_enable"] is False and opts["trt_int8_enable"] is False
        ep_dir = tmp_path / "ort-tensorrt" / precision
        assert opts["trt_engine_cache_path"] == opts["trt_timing_cache_path"] == str(ep_dir) and ep_dir.is_dir()
        assert opts["trt_engine_cache_enable"] and opts["trt_timing_cache_enable"]


def test_profile_shapes_of_a_real_manifest(tiny_bundle, tmp_path):
    """The query head's three dynamic inputs, as `clipfsar engine --max-batch 4 --max-classes 10` saved them."""
    b = Bundle.open(tiny_bundle)
    save_profile_options(tmp_path, ProfileOptions(max_batch=4, max_classes=10))
    from clipfsar.runtime.engines.trt_profile import load_profile_options
    spec = b.manifest.graphs["query_head"]
    prof = profile_shapes(spec.inputs, load_profile_options(tmp_path))
    opts = tensorrt_ep_options(tmp_path, "fp32", prof)
    T, D = b.manifest.model.frames, b.manifest.model.embed_dim
    assert opts["trt_profile_min_shapes"] == f"prototypes:1x{T}x{D},query:1x{T}x{D},text:1x{D}"
    assert opts["trt_profile_opt_shapes"] == f"prototypes:5x{T}x{D},query:1x{T}x{D},text:5x{D}"
    assert opts["trt_profile_max_shapes"] == f"prototypes:10x{T}x{D},query:4x{T}x{D},text:10x{D}"
    img = profile_shapes(b.manifest.graphs["image_encoder"].inputs, ProfileOptions())
    size = b.manifest.graphs["image_encoder"].inputs[0].shape[2]
    assert profile_option(img, 2) == f"images:16x3x{size}x{size}"


def test_no_cache_folder_means_no_caches_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    opts = tensorrt_ep_options(None, "fp16")
    assert opts["trt_engine_cache_enable"] is False and opts["trt_timing_cache_enable"] is False
    assert "trt_engine_cache_path" not in opts and list(tmp_path.iterdir()) == []


def test_unwritable_cache_folder_turns_the_caches_off(tmp_path, caplog):
    (tmp_path / "ort-tensorrt").write_text("a file where the folder should be")
    opts = tensorrt_ep_options(tmp_path, "fp32")
    assert opts["trt_engine_cache_enable"] is False and "CLIPFSAR_CACHE_DIR" in caplog.text


def test_workspace_and_provider_list(tmp_path):
    assert tensorrt_ep_options(tmp_path, "fp32", workspace_mb=1024)["trt_max_workspace_size"] == 1 << 30
    name, opts = _provider_list("tensorrt", tmp_path, "fp16", {"x": ((1, 2), (1, 2), (8, 2))})[0]
    assert name == "TensorrtExecutionProvider" and opts["trt_profile_max_shapes"] == "x:8x2"
    assert _provider_list("cpu", tmp_path, "fp16") == ["CPUExecutionProvider"]

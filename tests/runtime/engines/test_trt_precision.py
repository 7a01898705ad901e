"""Which graphs decide the precision (runtime/engines/precision.py, `clipfsar engine`, `clipfsar run`): only those
that run; an int8 variant TensorRT cannot build runs fp32 unless the graph was named or it is the only int8 one;
every refusal names the bundle, the graph and the way out, exits 2 and leaves the bundle and cache unchanged."""
import shutil
import subprocess
import sys

import pytest

from clipfsar.runtime.bundle.reader import Bundle, BundleError
from clipfsar.runtime.cli.engine import ENGINE_GRAPHS, engine_precisions
from clipfsar.runtime.engines.precision import PrecisionUnavailableError, choose_precisions
from clipfsar.runtime.engines.trt_engine import trt_usable

CLI = [sys.executable, "-m", "clipfsar"]
TRT_OK, _ = trt_usable()


def test_calibrate_static_bundle_runs_int8_on_tensorrt(int8_bundle):
    """After `calibrate --int8 static` (the advice the old error gave): the dynamic text encoder, which `run` never
    executes, no longer makes `run --precision int8` on TensorRT fail."""
    b = Bundle.open(int8_bundle)
    for backend in ("trt", "tensorrt"):
        assert choose_precisions(b, "int8", backend, ("image_encoder", "query_head")) == \
            {"image_encoder": "int8", "query_head": "fp32"}


def test_engine_builds_int8_where_tensorrt_can_and_fp32_for_the_rest(int8_bundle, caplog):
    b = Bundle.open(int8_bundle)
    chosen = engine_precisions(b, "int8", list(ENGINE_GRAPHS), explicit=False)
    assert chosen == {"image_encoder": "int8", "query_head": "fp32", "text_encoder": "fp32", "support_head": "fp32"}
    assert "the int8 variant of text_encoder is dynamic quantization" in caplog.text and "runs fp32" in caplog.text


def test_a_named_graph_never_falls_back(int8_bundle):
    b = Bundle.open(int8_bundle)
    with pytest.raises(PrecisionUnavailableError) as e:
        engine_precisions(b, "int8", ["text_encoder"], explicit=True)
    msg = str(e.value)
    assert str(int8_bundle) in msg and "text_encoder" in msg and "--int8 static" in msg


def test_only_dynamic_int8_is_refused_on_gpu_backends(tmp_path, tiny_bundle):
    from clipfsar.calib.int8 import quantize_dynamic_graph
    from clipfsar.runtime.bundle.edit import NewVariant, add_variants
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root, ignore=shutil.ignore_patterns("engines"))
    method = quantize_dynamic_graph(root / "image_encoder.onnx", tmp_path / "ie8.onnx")
    b = add_variants(root, {"image_encoder": {"int8": NewVariant(tmp_path / "ie8.onnx", method)}})
    for backend in ("trt", "tensorrt", "cuda"):
        with pytest.raises(PrecisionUnavailableError, match="image_encoder is dynamic quantization"):
            choose_precisions(b, "int8", backend, ("image_encoder", "query_head"))
    assert choose_precisions(b, "int8", "cpu", ("image_encoder", "query_head"))["image_encoder"] == "int8"


def test_uint8_qdq_is_refused_on_tensorrt_only(tmp_path, tiny_bundle, calib_batches):
    from clipfsar.calib.int8 import quantize_static_graph
    from clipfsar.runtime.bundle.edit import NewVariant, add_variants
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root, ignore=shutil.ignore_patterns("engines"))
    method = quantize_static_graph(root / "image_encoder.onnx", tmp_path / "u8.onnx", calib_batches(root), u8=True)
    b = add_variants(root, {"image_encoder": {"int8": NewVariant(tmp_path / "u8.onnx", method)}})
    with pytest.raises(PrecisionUnavailableError, match="uint8 activations"):
        choose_precisions(b, "int8", "trt", ("image_encoder", "query_head"))
    assert choose_precisions(b, "int8", "cpu", ("image_encoder",)) == {"image_encoder": "int8"}


def test_a_precision_no_running_graph_has(int8_bundle):
    b = Bundle.open(int8_bundle)
    with pytest.raises(BundleError, match=r"has no int8 variant \(it has fp32\) of the graphs that run \(query_head\)"):
        choose_precisions(b, "int8", "trt", ("query_head",))


@pytest.mark.skipif(TRT_OK, reason="TensorRT works here")
def test_run_int8_on_trt_gets_past_the_precision_choice(int8_bundle, stream_file, snapshot):
    """On this CPU `run --backend trt --precision int8` stops at TensorRT's absence, not at the text encoder."""
    before = snapshot(int8_bundle)
    r = subprocess.run(CLI + ["run", str(int8_bundle), "--source", str(stream_file), "--backend", "trt",
                              "--precision", "int8"], capture_output=True, text=True)
    assert r.returncode == 2 and "backend 'trt' cannot run here" in r.stderr, r.stderr
    assert "text_encoder" not in r.stderr and snapshot(int8_bundle) == before


def test_run_refusal_names_bundle_graph_and_way_out(tmp_path, tiny_bundle, stream_file, snapshot):
    from clipfsar.calib.int8 import quantize_dynamic_graph
    from clipfsar.runtime.bundle.edit import NewVariant, add_variants
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root, ignore=shutil.ignore_patterns("engines"))
    method = quantize_dynamic_graph(root / "image_encoder.onnx", tmp_path / "ie8.onnx")
    add_variants(root, {"image_encoder": {"int8": NewVariant(tmp_path / "ie8.onnx", method)}})
    before, cache = snapshot(root), tmp_path / "cache"
    for cmd in (["run", str(root), "--source", str(stream_file), "--backend", "trt", "--precision", "int8"],
                ["engine", str(root), "--precision", "int8"]):
        r = subprocess.run(CLI + cmd + ["--cache-dir", str(cache)], capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert str(root) in r.stderr and "image_encoder" in r.stderr and "--int8 static" in r.stderr
        assert snapshot(root) == before and not cache.exists()


def test_engine_auto_agrees_with_run_auto_on_a_gpu(tmp_path, tiny_bundle):
    """`clipfsar engine`'s default (auto) builds what `run --precision auto` runs on a GPU: fp16 where the
    report found it within the bound, else fp32; so the first `run` after `engine` finds its engines."""
    from clipfsar.calib.fp16 import to_fp16
    from clipfsar.runtime.bundle.edit import NewVariant, add_variants
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root, ignore=shutil.ignore_patterns("engines"))
    method = to_fp16(root / "image_encoder.onnx", tmp_path / "ie16.onnx", "image_encoder")
    run_graphs = ("image_encoder", "query_head")
    for flagged, want in ((False, "fp16"), (True, "fp32")):
        report = {"variants": {"fp16": {"flagged": flagged}}}
        b = add_variants(root, {"image_encoder": {"fp16": NewVariant(tmp_path / "ie16.onnx", method)}},
                         precision_report=report)
        built = engine_precisions(b, "auto", list(ENGINE_GRAPHS), explicit=False)
        for backend in ("trt", "tensorrt", "cuda"):
            ran = choose_precisions(b, "auto", backend, run_graphs)
            assert ran == {g: built[g] for g in run_graphs} and ran["image_encoder"] == want


def test_auto_with_no_backend_at_all_is_a_clear_error(tmp_path, tiny_bundle, stream_file):
    """Neither onnxruntime nor OpenVINO importable and no TensorRT: `run` (backend auto) says so (was an
    IndexError)."""
    for pkg in ("onnxruntime", "openvino"):
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text(f"raise ImportError('{pkg} is not installed here')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(CLI + ["run", str(tiny_bundle), "--source", str(stream_file)], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "no backend can run here" in r.stderr

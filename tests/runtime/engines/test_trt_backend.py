"""The native TensorRT backend and ``clipfsar engine``: bad input everywhere; engines built where TensorRT and a
GPU exist (skipped with the reason elsewhere)."""
import subprocess
import sys

import numpy as np
import pytest

from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.engines.backends import BackendUnavailableError, OnnxGraph, create_graph
from clipfsar.runtime.engines.trt_engine import trt_usable

CLI = [sys.executable, "-m", "clipfsar"]
TRT_OK, TRT_WHY = trt_usable()
needs_trt = pytest.mark.skipif(not TRT_OK, reason=f"needs TensorRT and a CUDA GPU: {TRT_WHY}")
no_trt = pytest.mark.skipif(TRT_OK, reason="TensorRT works here")


def engine_cli(*args):
    return subprocess.run(CLI + ["engine", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("args, message", [
    (["--max-batch", "0"], "--max-batch must be an integer >= 1"),
    (["--max-classes", "4", "--opt-classes", "5"], "--opt-classes must be between 1 and --max-classes (4)"),
    (["--workspace-mb", "0"], "--workspace-mb must be >= 1"),
    (["--precision", "bf16"], "--precision must be one of auto, fp32, fp16, int8"),
    (["--precision", "int8"], "int8"),
])
def test_engine_cli_bad_options(tiny_bundle, tmp_path, args, message):
    r = engine_cli(tiny_bundle, "--cache-dir", tmp_path / "cache", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and message in r.stderr
    assert not (tmp_path / "cache").exists()  # nothing written
    Bundle.open(tiny_bundle)  # the bundle is left valid


def test_engine_cli_precision_the_bundle_lacks_lists_what_it_has(tiny_bundle):
    r = engine_cli(tiny_bundle, "--precision", "fp16")
    assert r.returncode == 2 and "fp32" in r.stderr and "fp16" in r.stderr


def test_engine_cli_missing_bundle(tmp_path):
    r = engine_cli(tmp_path / "nope")
    assert r.returncode == 2 and "bundle folder not found" in r.stderr


@no_trt
def test_engine_cli_without_tensorrt_says_why(tiny_bundle, tmp_path):
    r = engine_cli(tiny_bundle, "--cache-dir", tmp_path / "cache")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "cannot build TensorRT engines here" in r.stderr and "clip-fsar[tensorrt]" in r.stderr
    assert not (tmp_path / "cache").exists()


@no_trt
def test_trt_backend_unavailable_is_a_clear_error(tiny_bundle, stream_file):
    b = Bundle.open(tiny_bundle)
    with pytest.raises(BackendUnavailableError, match="backend 'trt' cannot run here"):
        create_graph(b.graph_path("image_encoder"), "trt", spec=b.manifest.graphs["image_encoder"])
    r = subprocess.run(CLI + ["run", str(tiny_bundle), "--source", str(stream_file), "--backend", "trt"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "backend 'trt' cannot run here" in r.stderr and "Traceback" not in r.stderr


def test_auto_falls_back_to_onnxruntime_without_tensorrt(tiny_bundle):
    b = Bundle.open(tiny_bundle)
    g = create_graph(b.graph_path("image_encoder"), "auto", tiny_bundle / "engines",
                     spec=b.manifest.graphs["image_encoder"])
    if not TRT_OK:  # onnxruntime's best, or OpenVINO where auto prefers it
        assert g.backend != "trt" and (isinstance(g, OnnxGraph) or g.backend == "openvino")
    assert g.input_names == ["images"] and g.output_names == ["features"]


# ----- on a machine with TensorRT and a GPU -------------------------------------------------------------------
@needs_trt
def test_trt_engines_match_onnxruntime_and_are_cached(tiny_bundle, tmp_path):
    from clipfsar.runtime.engines.trt_backend import TrtGraph
    b = Bundle.open(tiny_bundle)
    cache = tmp_path / "engines"
    rng = np.random.default_rng(0)
    spec = b.manifest.graphs["image_encoder"]
    size = spec.inputs[0].shape[2]
    x = rng.standard_normal((20, 3, size, size)).astype(np.float32)  # 20 > max batch 16: runs in two pieces
    ref = OnnxGraph(b.graph_path("image_encoder"), "cpu").run(images=x)["features"]
    g = TrtGraph(b.graph_path("image_encoder"), spec.inputs, spec.outputs, "fp32", cache, name="image_encoder")
    assert g.backend == "trt" and g.input_names == ["images"] and g.output_names == ["features"]
    out = g.run(images=x)["features"]
    assert out.shape == ref.shape and np.abs(out - ref).max() < 1e-2
    assert np.abs(g.run(images=x[:3])["features"] - ref[:3]).max() < 1e-2  # shapes set per call
    engines = list(cache.glob("image_encoder.fp32.*.engine"))
    assert len(engines) == 1 and list(cache.glob("timing-*.cache"))
    mtime = engines[0].stat().st_mtime_ns
    TrtGraph(b.graph_path("image_encoder"), spec.inputs, spec.outputs, "fp32", cache, name="image_encoder")
    assert engines[0].stat().st_mtime_ns == mtime  # loaded, not rebuilt
    engines[0].write_bytes(engines[0].read_bytes()[:-7] + b"changed")  # tampered: rebuilt, never loaded
    g2 = TrtGraph(b.graph_path("image_encoder"), spec.inputs, spec.outputs, "fp32", cache, name="image_encoder")
    assert np.abs(g2.run(images=x[:2])["features"] - ref[:2]).max() < 1e-2


@needs_trt
def test_classifier_on_trt_matches_cpu(tiny_bundle, stream_file, tmp_path):
    import shutil

    from clipfsar.runtime import Classifier
    from clipfsar.runtime.video.clips import count_frames, read_frames
    bundle = tmp_path / "b"
    shutil.copytree(tiny_bundle, bundle)
    frames = read_frames(stream_file, range(count_frames(stream_file)))
    cpu = Classifier.load(bundle, backend="cpu").classify_clip(frames)
    clf = Classifier.load(bundle, backend="trt")
    assert clf.backend == "trt" and "TensorRT" in clf.providers["image_encoder"]
    trt = clf.classify_clip(frames)
    assert trt.label == cpu.label and np.allclose(trt.scores, cpu.scores, atol=1e-3)
    r = subprocess.run(CLI + ["engine", str(bundle), "--precision", "fp32"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    verbs = {line.split()[0]: line.split()[2] for line in r.stdout.splitlines() if line and not line[0].isspace()}
    # the runtime's two engines are found again (a "why" line of a fresh build may say "cached": not counted)
    assert verbs["image_encoder"] == verbs["query_head"] == "loaded", r.stdout
    assert verbs["text_encoder"] == verbs["support_head"] == "built", r.stdout


def test_engine_precision_per_graph(tiny_bundle, tmp_path):
    """fp16 asked, only the image encoder has it: the heads get fp32 engines unless named explicitly."""
    import shutil

    from clipfsar.calib.fp16 import to_fp16
    from clipfsar.runtime.bundle.edit import NewVariant, add_variants
    from clipfsar.runtime.bundle.reader import BundleError
    from clipfsar.runtime.cli.engine import engine_precisions
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root)
    method = to_fp16(root / "image_encoder.onnx", tmp_path / "ie16.onnx", "image_encoder")
    b = add_variants(root, {"image_encoder": {"fp16": NewVariant(tmp_path / "ie16.onnx", method)}})
    names = ["image_encoder", "query_head"]
    assert engine_precisions(b, "fp16", names, explicit=False) == {"image_encoder": "fp16", "query_head": "fp32"}
    assert engine_precisions(b, "fp32", names, explicit=True) == {"image_encoder": "fp32", "query_head": "fp32"}
    with pytest.raises(BundleError, match="'query_head' has no fp16 variant; it has fp32"):
        engine_precisions(b, "fp16", names, explicit=True)
    with pytest.raises(BundleError, match=r"has no int8 variant \(it has fp32, fp16\) of the graphs that run "
                                          r"\(image_encoder, query_head\)"):
        engine_precisions(b, "int8", names, explicit=False)


@no_trt
def test_trt_run_path_does_not_need_onnxruntime(tmp_path, tiny_bundle, stream_file):
    """`clipfsar run --backend trt` and `clipfsar engine` import no onnxruntime (a Jetson may have none): where
    importing it fails, they still get as far as TensorRT's absence."""
    (tmp_path / "onnxruntime").mkdir()
    (tmp_path / "onnxruntime" / "__init__.py").write_text("raise ImportError('onnxruntime is not installed here')\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for args in (["run", str(tiny_bundle), "--source", str(stream_file), "--backend", "trt"],
                 ["engine", str(tiny_bundle), "--cache-dir", str(tmp_path / "cache")]):
        r = subprocess.run(CLI + args, capture_output=True, text=True, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "TensorRT's Python package is not installed" in r.stderr, r.stderr


def test_dynamic_int8_variant_is_refused_for_engines(tiny_bundle, tmp_path):
    """TensorRT's int8 is explicit Q/DQ: a dynamic-quantization variant gets a clear error, not a parser failure."""
    import shutil

    from clipfsar.calib.int8 import quantize_dynamic_graph
    from clipfsar.runtime.bundle.edit import NewVariant, add_variants
    from clipfsar.runtime.cli.engine import engine_precisions
    from clipfsar.runtime.engines.precision import PrecisionUnavailableError
    root = tmp_path / "b"
    shutil.copytree(tiny_bundle, root)
    method = quantize_dynamic_graph(root / "image_encoder.onnx", tmp_path / "ie8.onnx")
    b = add_variants(root, {"image_encoder": {"int8": NewVariant(tmp_path / "ie8.onnx", method)}})
    with pytest.raises(PrecisionUnavailableError, match="int8 variant of image_encoder is dynamic quantization"):
        engine_precisions(b, "int8", ["image_encoder", "query_head"], explicit=False)
    r = engine_cli(root, "--precision", "int8", "--cache-dir", tmp_path / "cache")
    assert r.returncode == 2 and "--int8 static" in r.stderr and "Traceback" not in r.stderr
    assert str(root) in r.stderr and "image_encoder" in r.stderr and not (tmp_path / "cache").exists()

"""Calibration for the OpenVINO backend: where variants are measured, which precisions are made by default.

``calibrate`` measures every variant on the backend that will run it (``auto``: OpenVINO on an x86 CPU where it is
installed, as ``clipfsar run --backend auto`` picks it, else onnxruntime's CPU provider). On OpenVINO:

- ``bf16`` is made where the CPU computes in bf16 (AVX-512 BF16 or AMX; OpenVINO's OPTIMIZATION_CAPABILITIES):
  no file, the fp32 graph at bf16 inference precision, for the two encoders (the heads stay fp32: OTAM's soft-min
  and the fusion are where low precision costs accuracy, and they take well under a millisecond).
- int8 of the image encoder is the symmetric Q/DQ graph (``static``), for ViTs and CNNs alike: OpenVINO's CPU
  plugin folds Q/DQ pairs into int8 (VNNI) kernels, the fastest form it runs (docs/cpu.md measures it against
  onnxruntime's dynamic form and NNCF).

Example:
    >>> calibration_backend("auto")
    'openvino'
    >>> default_precisions("openvino")
    ('fp16', 'int8', 'bf16')
"""
from __future__ import annotations

from typing import Tuple

from clipfsar.runtime.base.errors import ClipFsarError

BF16_GRAPHS = ("image_encoder", "text_encoder")
CALIBRATION_BACKENDS = ("auto", "cpu", "openvino")


def calibration_backend(backend: str) -> str:
    """``cpu`` or ``openvino``: where ``calibrate`` measures (``auto``: OpenVINO where it runs on this x86 CPU).

    Raises:
        ClipFsarError: an unknown backend. OpenVinoUnavailableError: ``openvino`` where it is not installed (the
        message names the install command).
    """
    if backend not in CALIBRATION_BACKENDS:
        raise ClipFsarError(f"calibrate --backend must be one of {', '.join(CALIBRATION_BACKENDS)}, got '{backend}'")
    from clipfsar.runtime.engines.backends import openvino_on_x86
    if backend == "auto":
        return "openvino" if openvino_on_x86() else "cpu"
    if backend == "openvino":
        from clipfsar.runtime.engines.openvino_backend import OpenVinoUnavailableError, openvino_usable
        ok, why = openvino_usable("CPU")
        if not ok:
            raise OpenVinoUnavailableError(why)
    return backend


def default_precisions(backend: str) -> Tuple[str, ...]:
    """The variants ``calibrate`` makes by default on ``backend``: fp16 and int8, and bf16 where it runs."""
    if backend == "openvino":
        from clipfsar.runtime.engines.openvino_backend import has_bf16
        if has_bf16("CPU"):
            return ("fp16", "int8", "bf16")
    return ("fp16", "int8")

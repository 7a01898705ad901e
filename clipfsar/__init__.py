"""clip-fsar: few-shot action recognition (CLIP-FSAR) from training to the edge.

Subpackages: ``clipfsar.train`` (PyTorch), ``clipfsar.export`` (ONNX, bundles), ``clipfsar.runtime``
(torch-free inference), ``clipfsar.calib`` (INT8). Importing this package imports none of them.
"""

__version__ = "0.1.0"

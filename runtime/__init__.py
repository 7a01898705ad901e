"""Torch-free runtime: video reading, preprocessing, bundles and classification (numpy, OpenCV, onnxruntime).

Nothing in this package imports torch, torchvision or open_clip (a test checks it).
"""

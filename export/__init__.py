"""Export a checkpoint to a bundle: ONNX graphs, text-enhanced prototypes and the manifest."""

"""Precision variants (fp16, bf16, int8) of a bundle's graphs, their calibration data, and the report of what
precision costs (accuracy, cosine to fp32, speed) that `precision auto` chooses by."""

"""Base layer of the runtime: errors, atomic writes, JSON configs, redaction of secrets, thread counts, output folders.

May import: the standard library, numpy and safetensors only; nothing else of clipfsar.
"""

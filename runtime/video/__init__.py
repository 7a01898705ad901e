"""Video in: clip files and frame folders, preprocessing, file/camera/network sources, live-source faults.

May import: ``clipfsar.runtime.base``.
"""

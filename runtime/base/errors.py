"""Errors shared by every part of clip-fsar. Each one names the input and what is wrong with it."""


class ClipFsarError(Exception):
    """Base class: a user-facing error; the CLI prints its message and exits with status 2."""


class ConfigError(ClipFsarError, ValueError):
    """A configuration file or option is invalid."""


class VideoError(ClipFsarError):
    """A video file or frame folder cannot be read."""


class DatasetError(ClipFsarError):
    """A dataset folder or split list is unusable."""


class CheckpointError(ClipFsarError):
    """A checkpoint folder is missing files, corrupt, or of a newer format."""


class BundleError(ClipFsarError):
    """A bundle is missing files, has a wrong hash, or is of a newer schema."""

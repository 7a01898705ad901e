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


class DiskFullError(ClipFsarError):
    """The disk filled up while a file was written; what was there before is unchanged (the write was staged)."""


def is_disk_full(e: BaseException) -> bool:
    """True when ``e`` (or an exception it was raised from) is ENOSPC / EDQUOT: ``OSError: [Errno 28]``, or a
    library's own error carrying it in its text (safetensors' ``SafetensorError: ... No space left on device``,
    onnx's and torch's ``RuntimeError``s)."""
    import errno
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "os error 28" in text or "Disk quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


LOW_SPACE = 1 << 20  # bytes free below which a video writer's silent failure is put down to a full disk


def free_bytes(folder) -> int:
    """Bytes a non-root writer may still use in ``folder`` (statvfs); very large when it cannot be told."""
    import os
    try:
        st = os.statvfs(folder)
    except OSError:
        return 1 << 62
    return st.f_bavail * st.f_frsize


def no_space(path) -> OSError:
    """``OSError: [Errno 28] No space left on device`` for ``path``, for writers that fail without an errno
    (OpenCV's VideoWriter); ``staged_file`` turns it into the one ``DiskFullError``."""
    import errno
    return OSError(errno.ENOSPC, "No space left on device", str(path))


def disk_full_error(what) -> DiskFullError:
    """The one message for a full disk: ``no space left on device while writing X; nothing was changed``."""
    return DiskFullError(f"no space left on device while writing {what}; nothing was changed")

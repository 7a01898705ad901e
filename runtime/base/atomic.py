"""Atomic writes: build a file or folder beside its destination, then move it into place in one rename.

A process that dies mid-way leaves the previous version intact (and at worst a hidden temporary beside it).

A full disk (ENOSPC, EDQUOT; also a library's error that carries it, e.g. safetensors' ``SafetensorError``) while a
staged file or folder is written is translated here, once for every writer (enrol, calibrate-threshold, export,
the annotated ``--save`` video): the temporary is removed and :class:`~.errors.DiskFullError` says "no space left
on device while writing X; nothing was changed" (the CLI's exit 2).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from clipfsar.runtime.base.errors import ClipFsarError, disk_full_error, is_disk_full


@contextlib.contextmanager
def staged_file(path: Path, mode: int = 0o644, fsync: bool = False, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``fsync``: flush the written file to disk before the rename makes it visible (files a crash must never leave
    half-written under their real name: manifests, stores, configs). ``suffix``: the temporary's name ending (a
    video writer picks its container by it: ``.tmp.mp4``).

    Raises:
        DiskFullError: the disk filled up (``path`` is unchanged); whatever the body raises.

    Example:
        >>> with staged_file(Path("store.safetensors")) as tmp:
        ...     save_file(tensors, str(tmp))
    """
    path = Path(path)
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=suffix)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path) from e
        raise
    os.close(fd)
    try:
        yield Path(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if not isinstance(e, ClipFsarError) and is_disk_full(e):
            raise disk_full_error(path) from e
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else (or no way to tell): leave its files alone
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries (``.NAME.<pid>.*``) that writers of ``path`` killed mid-write left beside it: those
    whose process is gone. A live writer's temporary is never touched."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    prefix = f".{path.name}."
    for entry in path.parent.iterdir():
        pid = entry.name[len(prefix):].split(".", 1)[0]
        if entry.name.startswith(prefix) and pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()


def recover_folder(path: Path) -> None:
    """Undo what a kill between the two renames of :func:`staged_folder` leaves: ``path`` missing and its previous
    version moved aside as ``.NAME.old``. Puts the previous version back (readers and writers call this first)."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if not path.exists() and old.is_dir():
        try:
            os.replace(old, path)
        except OSError:  # another process recovered it first, or a read-only folder: nothing to undo here
            pass


@contextlib.contextmanager
def staged_folder(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` (an existing folder is
    moved aside first and deleted after), on error it is removed and ``path`` is untouched. A kill between the
    two renames leaves the previous version as ``.NAME.old``: :func:`recover_folder` puts it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(path)
    remove_stale_temporaries(path)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}."))
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path) from e
        raise
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, ClipFsarError) and is_disk_full(e):
            raise disk_full_error(path) from e
        raise

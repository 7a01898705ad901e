"""The engine cache folder (runtime/engines/cache_dir.py): --cache-dir, then CLIPFSAR_CACHE_DIR, then the bundle's
engines/, then a per-user folder for a read-only bundle; the same option on every command."""
import hashlib
import logging
import os

import pytest

from clipfsar.runtime.engines import cache_dir as cd
from clipfsar.runtime.engines.cache_dir import CACHE_ENV, engine_cache_dir, resolve_cache_dir, user_cache_root


def test_option_wins_then_environment_then_bundle(tmp_path):
    bundle = tmp_path / "b"
    bundle.mkdir()
    env = {CACHE_ENV: str(tmp_path / "env")}
    assert resolve_cache_dir(bundle, tmp_path / "opt", env) == (tmp_path / "opt", "option")
    assert resolve_cache_dir(bundle, None, env) == (tmp_path / "env", "env")
    assert resolve_cache_dir(bundle, None, {}) == (bundle / "engines", "bundle")
    assert resolve_cache_dir(bundle, None, {CACHE_ENV: ""}) == (bundle / "engines", "bundle")  # empty = unset
    assert not (bundle / "engines").exists()  # resolving creates nothing


def test_read_only_bundle_falls_back_to_a_per_user_folder(tmp_path, monkeypatch, caplog):
    """A bundle on a read-only mount (os.access says no: root here can write anywhere, so the answer of the
    operating system is what is replaced)."""
    bundle = tmp_path / "shared" / "b"
    bundle.mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(cd.os, "access", lambda p, mode: False if str(p).startswith(str(bundle)) else
                        real_access(p, mode))
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    digest = hashlib.sha256(str(bundle.resolve()).encode()).hexdigest()[:12]
    want = tmp_path / "xdg" / "clipfsar" / "engines" / f"b-{digest}"
    assert resolve_cache_dir(bundle, None, env) == (want, "user")
    with caplog.at_level(logging.WARNING):
        assert engine_cache_dir(bundle, None, env) == want
    assert "is read-only: engines are cached in" in caplog.text and CACHE_ENV in caplog.text
    assert resolve_cache_dir(bundle, tmp_path / "opt", env)[1] == "option"  # naming one still wins


def test_read_only_engines_folder_in_a_writable_bundle(tmp_path, monkeypatch):
    bundle = tmp_path / "b"
    (bundle / "engines").mkdir(parents=True)
    real_access = os.access
    monkeypatch.setattr(cd.os, "access", lambda p, mode: False if str(p).endswith("engines") else
                        real_access(p, mode))
    assert resolve_cache_dir(bundle, None, {"XDG_CACHE_HOME": str(tmp_path)})[1] == "user"


def test_two_bundles_of_one_name_get_two_user_folders(tmp_path, monkeypatch):
    monkeypatch.setattr(cd.os, "access", lambda p, mode: False)
    a, b = tmp_path / "x" / "bundle", tmp_path / "y" / "bundle"
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert resolve_cache_dir(a, None, env)[0] != resolve_cache_dir(b, None, env)[0]


def test_user_cache_root_per_platform(tmp_path):
    assert user_cache_root({"XDG_CACHE_HOME": "/c"}, "linux") == cd.Path("/c/clipfsar")
    assert user_cache_root({}, "linux").parts[-2:] == (".cache", "clipfsar")
    assert user_cache_root({"LOCALAPPDATA": "C:/Users/u/AppData/Local"}, "win32").name == "clipfsar"
    assert user_cache_root({}, "darwin").parts[-3:] == ("Library", "Caches", "clipfsar")


@pytest.mark.parametrize("command", ["engine", "run", "enroll", "serve", "bench"])
def test_every_command_takes_cache_dir(command):
    import importlib

    from clipfsar.cli import COMMANDS
    module, attr = COMMANDS[command][:2]
    cmd = getattr(importlib.import_module(module), attr)
    opts = {o for p in cmd.params for o in p.opts}
    assert "--cache-dir" in opts
    help_text = next(p.help for p in cmd.params if "--cache-dir" in p.opts)
    assert CACHE_ENV in help_text and "read-only" in help_text

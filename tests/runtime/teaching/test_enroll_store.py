"""Store writes: a lock between writers (no class lost), and kill -9 mid-write leaves the previous store valid."""
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from clipfsar.runtime.base.errors import BundleError
from clipfsar.runtime.bundle.edit import bundle_lock, replace_store
from clipfsar.runtime.bundle.reader import Bundle, PrototypeStore
from clipfsar.runtime.teaching.enroll import Enroller

WRITER = """
import sys
from clipfsar.runtime.bundle.reader import Bundle
from clipfsar.runtime.teaching.enroll import Enroller
root, tag = sys.argv[1], sys.argv[2]
e = Enroller(Bundle.open(root))
for i in range(4):
    e.enroll(f"{tag} action {i}", [])
"""


def test_two_writers_lose_no_class(bundle):
    n0 = len(Bundle.open(bundle).store.class_names)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(bundle), tag], stderr=subprocess.PIPE, text=True)
             for tag in ("left", "right")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    names = Bundle.open(bundle).store.class_names
    assert len(names) == n0 + 8
    assert {f"{t} action {i}" for t in ("left", "right") for i in range(4)} <= set(names)


def test_second_writer_fails_clearly_when_the_lock_is_held(bundle):
    with bundle_lock(bundle):
        t0 = time.perf_counter()
        with pytest.raises(BundleError, match=rf"being changed by another process \(pid {os.getpid()}\)"):
            Enroller(Bundle.open(bundle)).enroll("blocked", [], timeout=0.3)
        assert time.perf_counter() - t0 >= 0.3
    assert "blocked" not in Bundle.open(bundle).store.class_names


def _write_forever(root: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    i = 0
    while True:
        def change(store: PrototypeStore) -> PrototypeStore:
            if len(store.class_names) > 12:  # keep it small: drop the last class
                keep = slice(0, len(store.class_names) - 1)
                return PrototypeStore(store.class_names[keep], store.prototypes[keep], store.text_features[keep],
                                      store.shots[keep], None if store.support_features is None
                                      else store.support_features[keep])
            p = rng.standard_normal((1,) + store.prototypes.shape[1:]).astype(np.float32)
            return PrototypeStore(store.class_names + (f"writer {seed} #{i}",),
                                  np.concatenate([store.prototypes, p]),
                                  np.concatenate([store.text_features, p[:, 0]]),
                                  np.concatenate([store.shots, [1]]).astype(np.int32),
                                  None if store.support_features is None
                                  else np.concatenate([store.support_features, p]))
        replace_store(root, change)
        i += 1


def test_kill_9_during_50_store_writes_keeps_a_valid_store(bundle):
    ctx = multiprocessing.get_context("fork")
    rng = np.random.default_rng(0)
    original = set(Bundle.open(bundle).store.class_names)
    changed, last = 0, Bundle.open(bundle).manifest.prototypes["sha256"]
    for k in range(50):
        proc = ctx.Process(target=_write_forever, args=(str(bundle), k))
        proc.start()
        time.sleep(float(rng.uniform(0.02, 0.2)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        b = Bundle.open(bundle)  # hashes checked: manifest and store agree after every kill
        assert original <= set(b.store.class_names)
        assert b.store.prototypes.shape[0] == len(b.store.class_names)
        changed += b.manifest.prototypes["sha256"] != last
        last = b.manifest.prototypes["sha256"]
    assert changed >= 5  # some writes completed: the kills landed at different points of a write
    stores = [p.name for p in bundle.iterdir() if p.name.startswith("prototypes")]
    assert len(stores) <= 2  # the next write removes what a killed one left

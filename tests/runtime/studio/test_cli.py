"""`clipfsar studio`'s refusals before it serves anything: a clear message naming the input, exit 2."""
import socket
import subprocess
import sys

CLI = [sys.executable, "-m", "clipfsar", "studio"]


def _run(*args):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=60)


def test_refusals(tmp_path, tiny_bundle, held_out_source):
    r = _run(str(tmp_path / "nope"), "--source", str(held_out_source), "--port", "0")
    assert r.returncode == 2 and "error:" in r.stderr and "nope" in r.stderr and "Traceback" not in r.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = _run(str(tiny_bundle), "--source", str(held_out_source), "--port", str(port))
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr
    r = _run(str(tiny_bundle), "--source", str(held_out_source), "--port", "0", "--data", str(tmp_path / "nodata"))
    assert r.returncode == 2 and "--data" in r.stderr and "not a folder" in r.stderr
    r = subprocess.run([sys.executable, "-m", "clipfsar", "studio", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--cache-dir" in r.stdout and "--clips" in r.stdout and "--loop" in r.stdout


def test_without_the_studio_extra_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['starlette'] = None; "
            f"sys.argv = ['clipfsar', 'studio', {str(tmp_path)!r}, '--source', '0']; "
            "from clipfsar.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "pip install 'clip-fsar[studio]'" in r.stderr and "Traceback" not in r.stderr

"""The examples in docs/embedding.md work as written."""

import os
import pathlib
import queue
import threading
import subprocess
import sys
import time

from conftest import DEADLINE

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def test_tail_prints_each_record_with_its_name_escaped(service):
    p = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "tail.py"), service.socket],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out = queue.Queue()
    threading.Thread(target=lambda: [out.put(l) for l in p.stdout], daemon=True).start()
    lines = []

    def until_line(has, write=None):
        until = time.monotonic() + DEADLINE
        i = 0
        while not any(has in l for l in lines):
            assert time.monotonic() < until, lines
            if write:
                write(i)
                i += 1
            try:
                lines.append(out.get(timeout=0.2))
            except queue.Empty:
                pass

    try:
        # Files before the watch is in place are never seen: write until one shows.
        until_line(b" create ", lambda i: (service.watched / f"ready{i}").write_bytes(b"x"))
        (service.watched / "evil\x1b[2Jname").write_bytes(b"x")
        until_line(b"evil")
        line = next(l for l in lines if b"evil" in l)
        assert b"\x1b" not in line
        assert b"\\x1b[2Jname" in line
    finally:
        p.kill()
        p.wait()


DOC = pathlib.Path(__file__).resolve().parents[3] / "docs" / "embedding.md"


def doc_blocks():
    text = DOC.read_text()
    return [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]


def default_socket_env(service, tmp_path):
    """An environment whose default socket (XDG_RUNTIME_DIR/firehose/firehose.sock) is the
    service's, as a user's own service would have it."""
    rt = tmp_path / "rt"
    (rt / "firehose").mkdir(parents=True)
    os.symlink(service.socket, rt / "firehose" / "firehose.sock")
    return {**os.environ, "XDG_RUNTIME_DIR": str(rt), "PYTHONUNBUFFERED": "1"}


def test_the_docs_tail_program_is_the_example():
    assert doc_blocks()[0] == (EXAMPLES / "tail.py").read_text()


def test_the_docs_arrow_program_runs(service, tmp_path):
    import firehose
    from conftest import wait_until

    env = default_socket_env(service, tmp_path)
    r = firehose.Reader(service.socket)
    n = 0

    def seen():
        nonlocal n
        n += 1
        (service.watched / f"m{n}.rs").write_bytes(b"x")
        return len(r.query(glob="**/*.rs")) > 0

    wait_until("a .rs file in history", seen)
    block = next(b for b in doc_blocks() if "pyarrow" in b)
    out = subprocess.run([sys.executable, "-c", block], env=env, capture_output=True, timeout=DEADLINE)
    assert out.returncode == 0, out.stderr.decode()
    assert b"create" in out.stdout


def test_the_docs_asyncio_program_prints_records(service, tmp_path):
    env = default_socket_env(service, tmp_path)
    block = next(b for b in doc_blocks() if "AsyncReader" in b)
    p = subprocess.Popen([sys.executable, "-c", block], env=env, stdout=subprocess.PIPE)
    out = queue.Queue()
    threading.Thread(target=lambda: [out.put(l) for l in p.stdout], daemon=True).start()
    try:
        until = time.monotonic() + DEADLINE
        i = 0
        while True:
            assert time.monotonic() < until, "the asyncio program printed no record"
            (service.watched / f"a{i}").write_bytes(b"x")
            i += 1
            try:
                if out.get(timeout=0.2).startswith(b"Record("):
                    break
            except queue.Empty:
                pass
    finally:
        p.kill()
        p.wait()

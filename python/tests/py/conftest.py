"""The real firehosed for the Python tests: $FIREHOSED (tests/pytest.rs sets it), over a
temporary folder, killed at the end."""

import os
import subprocess
import time

import pytest

DEADLINE = 30.0


class Service:
    def __init__(self, root, extra=()):
        self.root = root
        self.watched = root / "w"
        self.watched.mkdir()
        self.socket = str(root / "s.sock")
        self.proc = subprocess.Popen(
            [
                os.environ["FIREHOSED"],
                "--watch", str(self.watched),
                "--socket", self.socket,
                "--db", str(root / "h.db"),
                "--filters", str(root / "filters"),
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        until = time.monotonic() + DEADLINE
        while not os.path.exists(self.socket):
            assert self.proc.poll() is None, "firehosed ended at start"
            assert time.monotonic() < until, "firehosed did not create its socket"
            time.sleep(0.02)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def service(tmp_path):
    s = Service(tmp_path)
    yield s
    s.stop()


@pytest.fixture
def synthetic(tmp_path):
    """A service making 20,000 made-up records a second."""
    s = Service(tmp_path, ["--synthetic", "20000"])
    yield s
    s.stop()


def wait_until(what, check, timeout=DEADLINE):
    until = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < until, f"timed out waiting for {what}"
        time.sleep(0.02)

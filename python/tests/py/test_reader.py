"""The live reader: iteration, drain, the fd, resume, hostile names, errors."""

import os
import select
import time

import pytest

import firehose
from conftest import DEADLINE, wait_until


def creates_under(evs, folder):
    prefix = str(folder) + os.sep
    return [e for e in evs if isinstance(e, firehose.Record) and e.kind == "create" and e.path.startswith(prefix)]


def wait_watching(service, reader):
    """A file written before the watch is in place is never seen: write new ones until one is."""
    for i in range(int(DEADLINE / 0.2)):
        (service.watched / f"ready-{i}").write_bytes(b"x")
        deadline = time.monotonic() + 0.2
        while time.monotonic() < deadline:
            if creates_under(reader.drain(), service.watched):
                return
            time.sleep(0.01)
    pytest.fail("the service never reported a file")


def test_iteration_gives_every_create_once_in_seq_order(service):
    r = firehose.Reader(service.socket, name="pytest-iter")
    wait_watching(service, r)
    for i in range(200):
        (service.watched / f"f{i}").write_bytes(b"x")
    seen, seqs = [], []
    until = time.monotonic() + DEADLINE
    for ev in r:
        assert time.monotonic() < until, f"only {len(seen)} of 200 files"
        if isinstance(ev, firehose.Record):
            seqs.append(ev.seq)
            if ev.kind == "create" and os.path.basename(ev.path).startswith("f"):
                seen.append(os.path.basename(ev.path))
        if len(seen) == 200:
            break
    assert seen == [f"f{i}" for i in range(200)]
    assert seqs == sorted(set(seqs)), "seqs repeat or go back"


def test_oldest_start_replays_history_then_goes_live(service):
    r0 = firehose.Reader(service.socket)
    wait_watching(service, r0)
    for i in range(100):
        (service.watched / f"old{i}").write_bytes(b"x")
    pattern = str(service.watched / "old*")
    wait_until("100 creates in history", lambda: len(r0.query(glob=pattern, kinds=["create"])) == 100)
    r = firehose.Reader(service.socket, start="oldest")
    (service.watched / "new").write_bytes(b"x")
    got = []
    until = time.monotonic() + DEADLINE
    for ev in r:
        assert time.monotonic() < until
        if isinstance(ev, firehose.Record) and ev.kind == "create":
            got.append(os.path.basename(ev.path))
            if got[-1] == "new":
                break
    names = [n for n in got if n.startswith("old")]
    assert names == [f"old{i}" for i in range(100)]


def test_a_name_with_a_newline_an_escape_and_bad_utf8_comes_back_exactly(service):
    r = firehose.Reader(service.socket)
    wait_watching(service, r)
    raw = b"a\nb\x1b[31mred\xff\xfe"
    name = os.fsdecode(raw)
    with open(os.path.join(os.fsencode(service.watched), raw), "wb") as f:
        f.write(b"x")
    ev = wait_until("the hostile name", lambda: next((e for e in creates_under(r.drain(), service.watched) if e.path_bytes.endswith(raw)), None))
    assert ev.path == os.path.join(str(service.watched), name)
    assert os.fsencode(ev.path) == ev.path_bytes
    assert "\x1b" not in repr(ev), "repr must not carry a raw escape"


def test_the_fd_sleeps_when_idle_and_wakes_for_a_new_file(service):
    r = firehose.Reader(service.socket)
    wait_watching(service, r)
    wait_until("an empty drain", lambda: r.drain() == [])
    fd = r.fileno()
    readable, _, _ = select.select([fd], [], [], 0.3)
    assert readable == [], "the fd is readable with nothing to drain"
    (service.watched / "wake").write_bytes(b"x")
    readable, _, _ = select.select([fd], [], [], DEADLINE)
    assert readable == [fd], "a new file did not wake the fd"
    got = wait_until("the new file", lambda: creates_under(r.drain(), service.watched))
    assert os.path.basename(got[0].path) == "wake"
    assert r.fileno() == fd


def test_a_new_reader_resumes_exactly_at_next_seq(service):
    r = firehose.Reader(service.socket, start="oldest")
    wait_watching(service, r)
    for i in range(50):
        (service.watched / f"a{i}").write_bytes(b"x")
    seen = []
    for ev in r:
        if isinstance(ev, firehose.Record):
            seen.append(ev.seq)
            if os.path.basename(ev.path) == "a24" and ev.kind == "create":
                break
    resume = r.next_seq
    assert resume == seen[-1] + 1
    del r
    r2 = firehose.Reader(service.socket, start=resume)
    first = next(e for e in r2 if isinstance(e, firehose.Record))
    assert first.seq == resume


def test_drain_batch_is_an_arrow_batch_of_the_records(service):
    pa = pytest.importorskip("pyarrow")
    r = firehose.Reader(service.socket)
    wait_watching(service, r)
    for i in range(30):
        (service.watched / f"b{i}").write_bytes(b"x")
    rows = []

    def some():
        b = r.drain_batch()
        rows.extend(pa.record_batch(b).select(["seq", "kind", "path"]).to_pylist())
        return sum(1 for x in rows if x["kind"] == "create" and os.path.basename(x["path"]).startswith("b")) >= 30

    wait_until("30 creates in batches", some)
    seqs = [x["seq"] for x in rows]
    assert seqs == sorted(set(seqs))


def test_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(firehose.NotRunning) as e:
        firehose.Reader(str(tmp_path / "nothing.sock"))
    assert "nothing.sock" in str(e.value)
    long = tmp_path / ("x" * 300)
    with pytest.raises(firehose.Error) as e:
        firehose.Reader(str(long))
    assert "at most 107 bytes" in str(e.value)
    with pytest.raises(ValueError):
        firehose.Reader(str(tmp_path / "s.sock"), start="yesterday")


def test_status_names_this_reader(service):
    r = firehose.Reader(service.socket, name="pytest-status")
    st = r.status()
    assert st["pid"] == service.proc.pid
    assert any(x["name"] == "pytest-status" for x in st["readers"])
    assert str(service.watched) in st["roots"][0]

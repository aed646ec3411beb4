"""History pages as Arrow batches, through the Arrow PyCapsule interface."""

import os

import pytest

import firehose
from conftest import wait_until

pa = pytest.importorskip("pyarrow")


@pytest.fixture
def filled(service):
    """300 files in history."""
    r = firehose.Reader(service.socket)
    ready = str(service.watched / "ready*")
    n = 0

    def watching():
        nonlocal n
        n += 1
        (service.watched / f"ready{n}").write_bytes(b"x")
        return len(r.query(glob=ready)) > 0

    wait_until("the watch", watching)
    for i in range(300):
        (service.watched / f"h{i:03}").write_bytes(b"x")
    pattern = str(service.watched / "h*")
    wait_until("300 creates", lambda: len(set(pa.record_batch(r.query(glob=pattern, kinds=["create"], limit=1000)).column("path").to_pylist())) == 300)
    return r, pattern


def test_pages_cover_history_once_in_order(filled):
    r, pattern = filled
    batches = list(r.history(page=100, glob=pattern, kinds=["create"]))
    assert len(batches) >= 3
    assert all(b.more for b in batches[:-1]) and not batches[-1].more
    table = pa.Table.from_batches([pa.record_batch(b) for b in batches])
    seqs = table.column("seq").to_pylist()
    assert seqs == sorted(set(seqs))
    names = {os.path.basename(p) for p in table.column("path").to_pylist()}
    assert names == {f"h{i:03}" for i in range(300)}


def test_the_schema_is_typed(filled):
    r, pattern = filled
    b = pa.record_batch(r.query(glob=pattern, limit=10))
    s = b.schema
    assert s.field("seq").type == pa.uint64()
    assert s.field("time").type == pa.timestamp("ns", tz="UTC")
    assert s.field("kind").type == pa.large_string()
    assert s.field("path").type == pa.large_string()
    assert s.field("path_bytes").type == pa.large_binary()
    assert s.field("size").type == pa.uint64()
    assert s.field("rule").type == pa.uint32()
    assert s.field("reconciled").type == pa.bool_()
    b.validate(full=True)
    assert b.num_rows == 10
    assert b.column("path_to").null_count == 10
    assert b.column("path_bytes").null_count == 10


def test_a_stream_and_a_schema_capsule_are_read_too(filled):
    r, pattern = filled
    page = r.query(glob=pattern, limit=50)
    t = pa.table(page)  # __arrow_c_stream__
    assert t.num_rows == 50
    assert pa.schema(page).names[0] == "seq"  # __arrow_c_schema__
    # Read it twice: every export borrows the same buffers.
    assert pa.record_batch(page).column("seq").to_pylist() == t.column("seq").to_pylist()


def test_bad_queries_are_refused_with_a_reason(service):
    r = firehose.Reader(service.socket)
    with pytest.raises(firehose.InvalidQuery, match="limit"):
        r.query(limit=0)
    with pytest.raises(firehose.InvalidQuery, match="1000000"):
        r.query(limit=2_000_000)
    with pytest.raises(firehose.InvalidQuery, match="unknown kind"):
        r.query(kinds=["explode"])
    with pytest.raises(firehose.InvalidQuery, match="glob"):
        r.query(glob="[")


def test_a_non_utf8_name_keeps_its_bytes_in_the_batch(service):
    r = firehose.Reader(service.socket)
    raw = b"bad\xff\xfename"
    target = os.path.join(os.fsencode(service.watched), raw)
    def seen():
        with open(target, "wb") as f:
            f.write(b"x")
        b = pa.record_batch(r.query(kinds=["create"])).select(["path", "path_bytes"])
        return [x for x in b.to_pylist() if x["path_bytes"] is not None]
    rows = wait_until("the name in history", seen)
    assert rows[0]["path_bytes"] == target
    assert "\ufffd" in rows[0]["path"]

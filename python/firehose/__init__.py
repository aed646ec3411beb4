"""Firehose for Python: the file events a ``firehosed`` service publishes, live and from
its history.

    import firehose
    for ev in firehose.Reader(start="oldest"):
        print(ev)

``Reader`` hands out ``Record`` and ``Notice`` objects one at a time (iteration blocks),
a list at a time (``drain()``, never blocks) or as an Arrow batch (``drain_batch()``).
``query()`` gives one page of history as an Arrow batch and ``history()`` all of them;
``pyarrow.table(batch)`` and ``polars.DataFrame(batch)`` take a batch without a copy.
``firehose.aio.AsyncReader`` is the same reader for asyncio.
"""

from ._native import (
    Batch,
    Disconnected,
    Error,
    InvalidQuery,
    NoHistory,
    NotAllowed,
    NotRunning,
    Notice,
    OtherInstance,
    Record,
)
from ._native import Reader as _NativeReader

__all__ = [
    "Batch",
    "Disconnected",
    "Error",
    "InvalidQuery",
    "NoHistory",
    "NotAllowed",
    "NotRunning",
    "Notice",
    "OtherInstance",
    "Reader",
    "Record",
]


class Reader(_NativeReader):
    """A connection to the service (one socket, one ring reader).

    ``Reader(socket=None, *, name="python", lossless=False, backfill=None, reconnect=True,
    start="newest")``. ``start`` is "newest", "oldest" or a seq (``next_seq`` of an earlier
    reader, to resume exactly there). With backfill (the default unless ``start`` is
    "newest") every stored record comes exactly once, in seq order, whatever the ring
    dropped.
    """

    def history(self, *, from_seq=1, to_seq=None, page=65536, **filters):
        """Every page of history from ``from_seq`` on, as batches (see ``query``)."""
        while True:
            batch = self.query(from_seq=from_seq, to_seq=to_seq, limit=page, **filters)
            yield batch
            if not batch.more:
                return
            from_seq = batch.next_seq

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

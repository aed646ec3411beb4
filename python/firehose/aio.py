"""The reader for asyncio: ``async for ev in AsyncReader(...)``, woken by the reader's fd
through ``loop.add_reader`` (no thread, no polling)."""

import asyncio

from . import Reader


class AsyncReader:
    """A ``firehose.Reader`` whose waits are asyncio waits. Takes the same arguments.

        async for ev in AsyncReader(start="oldest"):
            print(ev)

    ``drain()`` and ``drain_batch()`` wait until there is something, then hand out all of
    it (up to ``max``). ``reader`` is the ``Reader`` inside, for ``status`` and ``query``
    (they wait for the service: call them in an executor if the loop must not block).
    """

    def __init__(self, *args, **kwargs):
        self.reader = Reader(*args, **kwargs)

    async def _readable(self):
        loop = asyncio.get_running_loop()
        fd = self.reader.fileno()
        ready = loop.create_future()

        def on_readable():
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, on_readable)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    async def drain(self, max=4096):
        """At least one event, at most ``max``: waits until something has arrived."""
        while True:
            evs = self.reader.drain(max)
            if evs:
                return evs
            await self._readable()

    async def drain_batch(self, max=65536):
        """An Arrow batch of at least one record or notice: waits until something has
        arrived."""
        while True:
            batch = self.reader.drain_batch(max)
            if len(batch) or batch.notices:
                return batch
            await self._readable()

    def __aiter__(self):
        return self

    async def __anext__(self):
        while True:
            ev = self.reader.next_nowait()
            if ev is not None:
                return ev
            await self._readable()

    @property
    def next_seq(self):
        """Where a new reader would resume."""
        return self.reader.next_seq

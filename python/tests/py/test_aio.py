"""The asyncio reader: woken by the fd through loop.add_reader."""

import asyncio
import os

import firehose
from firehose.aio import AsyncReader
from conftest import DEADLINE


def test_async_for_gets_the_files(service):
    async def main():
        ar = AsyncReader(service.socket, name="pytest-aio")
        names = []

        async def writer():
            for i in range(500):
                (service.watched / f"z{i}").write_bytes(b"x")
                await asyncio.sleep(0.002 if i % 50 == 0 else 0)

        async def read():
            async for ev in ar:
                if isinstance(ev, firehose.Record) and ev.kind == "create":
                    n = os.path.basename(ev.path)
                    if n.startswith("z"):
                        names.append(n)
                        if len(names) == 500:
                            return

        # A file written before the watch is in place is never seen: wait for the watch.
        for i in range(1000):
            (service.watched / f"ready{i}").write_bytes(b"x")
            evs = await asyncio.wait_for(ar.drain(), DEADLINE)
            if any(isinstance(e, firehose.Record) for e in evs):
                break
        w = asyncio.create_task(writer())
        await asyncio.wait_for(read(), DEADLINE)
        await w
        return names

    names = asyncio.run(main())
    assert names == [f"z{i}" for i in range(500)]

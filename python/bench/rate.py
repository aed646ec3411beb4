"""How fast Python takes records from a running firehosed, per CPU second of this process.

    python3 python/bench/rate.py SOCKET [SECONDS]

Reads live records for SECONDS (default 10) three ways, one after the other: one record at
a time (iteration), as Arrow batches (drain_batch, then pyarrow.record_batch), and history
pages (query, 1M rows a page). Prints records handed out, records per wall second, and
records per CPU second of this process (what one core would sustain), plus the loss the
reader was told of. Start the service with --synthetic RATE to have records to read.
"""

import os
import select
import sys
import time

import firehose

try:
    import pyarrow as pa
except ImportError:
    pa = None


def run(name, seconds, body):
    wall0, cpu0 = time.monotonic(), time.process_time()
    n, lost = body(seconds)
    wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
    print(f"{name:>14}: {n:>10} records, {n / wall:>12,.0f}/s wall, {n / max(cpu, 1e-9):>12,.0f}/s per CPU second ({cpu / wall:.0%} of a core), lost {lost}")


def lost_of(ev):
    if ev.type in ("lagged", "gap"):
        return ev.to_seq - ev.from_seq + 1
    return 0


def per_record(socket):
    def body(seconds):
        r = firehose.Reader(socket, name="bench-iter")
        n = lost = 0
        end = time.monotonic() + seconds
        for ev in r:
            if type(ev) is firehose.Record:
                n += 1
                if n & 0x3FFF == 0 and time.monotonic() > end:
                    break
            else:
                lost += lost_of(ev)
        return n, lost
    return body


def batches(socket):
    def body(seconds):
        r = firehose.Reader(socket, name="bench-batch")
        fd = r.fileno()
        n = lost = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            b = r.drain_batch(1 << 16)
            if len(b) == 0 and not b.notices:
                select.select([fd], [], [], 0.1)
                continue
            if pa is not None:
                rb = pa.record_batch(b)
                n += rb.num_rows
            else:
                n += len(b)
            lost += sum(lost_of(x) for x in b.notices)
        return n, lost
    return body


def history(socket):
    def body(seconds):
        r = firehose.Reader(socket, name="bench-history")
        n = 0
        end = time.monotonic() + seconds
        frm = 1
        while time.monotonic() < end:
            b = r.query(from_seq=frm, limit=1_000_000)
            n += pa.record_batch(b).num_rows if pa is not None else len(b)
            frm = b.next_seq if b.more else 1
        return n, 0
    return body


def main():
    socket = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    print(f"python {sys.version.split()[0]}, pid {os.getpid()}, {seconds:g} s each")
    run("one at a time", seconds, per_record(socket))
    run("arrow batches", seconds, batches(socket))
    run("history pages", seconds, history(socket))


if __name__ == "__main__":
    main()

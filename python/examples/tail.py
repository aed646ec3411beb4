import sys

import firehose

# Every stored record from the oldest on, then live ones as they come; Ctrl-C stops.
reader = firehose.Reader(sys.argv[1] if len(sys.argv) > 1 else None, start="oldest")
for ev in reader:
    if isinstance(ev, firehose.Record):
        # repr(): a name with a newline or an escape sequence never reaches the terminal raw.
        print(ev.seq, ev.kind, repr(ev.path), flush=True)
    else:
        print("notice:", ev, flush=True)
